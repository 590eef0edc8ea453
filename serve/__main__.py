"""Translate files and pipes, or serve bundles over HTTP; no torch needed.

    python -m serve translate --model models/en-de/onnx [--beam 5] [--input F] [--output F] [--split-sentences] [--confidence] [--precision int8]
    python -m serve http --model models/en-de/onnx [--model models/de-en/onnx] [--host 127.0.0.1] [--port 8000] [--precision int8]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.bundle import BundleError
from core.data import DataError, decode_lines, read_lines
from core.heads import HeadMask
from core.search import Translation
from core.translator import available_cores, check_options

from .arguments import NON_NEGATIVE_NUMBER, POSITIVE, POSITIVE_NUMBER, PORT, add_precision
from .batcher import BatchSettings
from .policy import InputError, InputLimits, check_prefix, fit_text
from .sentences import split_sentences, translate_paragraphs
from .server import ConnectionLimits
from .validation import Limits


def writable(path: str) -> str | None:
    """Why path cannot be written (checked before any work), or None."""
    target = Path(path)
    if target.is_dir():
        return f"{path} is a folder"
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        return f"no folder {folder} for {path}"
    if not os.access(target if target.exists() else folder, os.W_OK):
        return f"{path} is not writable"
    return None


def output_line(translation: Translation, confidence: bool) -> str:
    """A translation's output line; with ``confidence``, a tab, its score and a tab, its label (an empty source
    stays an empty line)."""
    if not confidence or translation.confidence is None:
        return translation.text + "\n"
    return f"{translation.text}\t{translation.confidence.score:.3f}\t{translation.confidence.label}\n"


def translate_command(args: argparse.Namespace) -> None:
    """One line in, one line out, in order; empty lines stay empty; batches are length-sorted by the search."""
    from .translator import Translator

    problem = args.output and writable(args.output)
    if problem:
        sys.exit(f"error: --output: {problem}")
    try:
        translator = Translator(args.model, threads=args.threads, workers=args.workers, precision=args.precision)
        check_options(beam_size=args.beam, length_penalty=args.length_penalty, max_length=None, n_best=1,
                      batch_size=args.batch_size, max_beam_size=translator.max_beam_size)
        if args.confidence and translator.confidence is None:
            raise ValueError(f"--confidence: {args.model} is not calibrated (no confidence.json in its manifest; "
                             "run python -m serve.calibrate)")
        lines = read_lines(args.input) if args.input else decode_lines(sys.stdin.buffer, "<stdin>")
        prefixes = read_lines(args.target_prefix) if args.target_prefix else None
        heads_off = args.heads_off.split(",") if args.heads_off else []
        HeadMask.switched_off(heads_off, translator.config)  # refuses a bad entry before any work
        if prefixes is not None and len(prefixes) != len(lines):
            raise ValueError(f"--target-prefix: {len(prefixes)} lines for {len(lines)} input lines")
        if prefixes is not None and args.split_sentences:
            raise ValueError("--target-prefix: the start of a translation of one sentence; not with --split-sentences")
    except (BundleError, DataError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    name, limits = args.input or "<stdin>", InputLimits(max_chars=sys.maxsize, max_tokens=translator.max_source_tokens)
    for number, line in enumerate(lines, start=1):
        try:  # the shared input policy; any length in characters; with --split-sentences, each sentence
            for sentence in split_sentences(line, translator.source_lang) if args.split_sentences else [line]:
                fitted = fit_text(translator, sentence, limits, cut=False)
        except InputError as error:
            sys.exit(f"error: {name}:{number}: {error}{' in a sentence' if args.split_sentences else ''}, the most "
                     "the model reads")
        if args.split_sentences:
            continue
        try:
            check_prefix(translator, prefixes[number - 1] if prefixes else None, fitted.tokens, limits, None)
        except InputError as error:
            sys.exit(f"error: {args.target_prefix}:{number}: {error}")
    options = dict(beam_size=args.beam, length_penalty=args.length_penalty, heads_off=heads_off,
                   batch_size=args.batch_size, progress=sys.stderr.isatty())
    if args.split_sentences:
        translations = translate_paragraphs(translator, lines, **options)
    else:
        translations = translator.translate(lines, target_prefix=prefixes and [prefix or None for prefix in prefixes],
                                            **options)
    output = "".join(output_line(t, args.confidence) for t in translations)
    if args.output:
        try:
            Path(args.output).write_text(output, encoding="utf-8")
        except OSError as error:
            sys.exit(f"error: --output: {error}")
    else:
        sys.stdout.write(output)
    unknown = sum(1 for t in translations if t.unknown_characters)
    if unknown:
        print(f"warning: {unknown} of {len(lines)} lines have characters the model does not know", file=sys.stderr)


def http_command(args: argparse.Namespace) -> None:
    from . import server
    from .api import check_language_pairs, create_app, load_bundles

    # One core is left to the event loop, JSON and the sockets: on 2 cores with the load generator beside it, one
    # search worker served 111 sentences/s (p95 0.7 s) and two served 96 (p95 2.0 s).
    workers = args.workers or max(1, available_cores() - 1)
    try:  # every bundle loaded and verified before the server starts: a bad one is one line, not a stack trace
        translators = load_bundles(args.model, threads=args.threads, workers=workers, precision=args.precision)()
        check_language_pairs(translators)
    except (BundleError, ValueError) as error:
        sys.exit(f"error: {error}")
    batching = BatchSettings(max_batch_size=args.max_batch_size, max_batch_cost=args.max_batch_cost,
                             max_wait_ms=args.max_wait_ms, max_queue=args.max_queue)
    limits = Limits(deadline_s=args.deadline, body_timeout_s=args.body_timeout)
    app = create_app(lambda: translators, limits, batching)
    # The event loop and the search thread share the GIL; a shorter switch interval than the default 5 ms keeps
    # the search from waiting on HTTP work (measured: about +10% sentences/s under 64 clients on 2 cores).
    sys.setswitchinterval(0.001)
    server.run(app, host=args.host, port=args.port, log_level=args.log_level,
               limits=ConnectionLimits(header_timeout_s=args.header_timeout, keep_alive_s=args.keep_alive,
                                       max_connections=args.max_connections))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    translate = commands.add_parser("translate", help="translate lines from a file or standard input")
    translate.add_argument("--model", required=True, help="exported bundle folder (e.g. models/en-de/onnx)")
    translate.add_argument("--beam", type=POSITIVE, default=5, help="beam size (1: greedy)")
    translate.add_argument("--length-penalty", type=NON_NEGATIVE_NUMBER, default=1.0,
                           help="score = log P / length^length_penalty (default 1.0)")
    translate.add_argument("--workers", type=POSITIVE, help="batches searched at once (default: one per core)")
    translate.add_argument("--threads", type=POSITIVE, default=1, help="onnxruntime threads per worker (default 1)")
    translate.add_argument("--batch-size", type=POSITIVE, default=32, help="sentences per search batch")
    add_precision(translate)
    translate.add_argument("--input", help="file to translate, one sentence per line (default: standard input)")
    translate.add_argument("--output", help="file to write (default: standard output)")
    translate.add_argument("--target-prefix", metavar="FILE",
                           help="the start of each translation, one line per input line (an empty line: none); "
                                "the search continues from it")
    translate.add_argument("--heads-off", metavar="HEADS",
                           help="attention heads to switch off, comma-separated kind.layer.head (kind encoder, "
                                "decoder or cross; from 0), e.g. cross.3.0,cross.3.1")
    translate.add_argument("--split-sentences", action="store_true",
                           help="translate each line sentence by sentence (split by sentencex in the model's source "
                                "language) and join the translations with a space; default: a line is one search")
    translate.add_argument("--confidence", action="store_true",
                           help="append a tab, the confidence score (0-1) and a tab, in_domain or out_of_domain")
    translate.set_defaults(run=translate_command)

    http = commands.add_parser("http", help="serve the Hugging Face translation task over HTTP")
    http.add_argument("--model", required=True, action="append", help="bundle folder; repeat for more models")
    http.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    http.add_argument("--port", type=PORT, default=8000, help="TCP port (default 8000)")
    http.add_argument("--workers", type=POSITIVE, help="batches searched at once per model (default: cores - 1, at least 1)")
    http.add_argument("--threads", type=POSITIVE, default=1, help="onnxruntime threads per worker (default 1)")
    add_precision(http)
    http.add_argument("--max-batch-size", type=POSITIVE, default=32, help="sentences per search batch")
    http.add_argument("--max-batch-cost", type=POSITIVE, default=BatchSettings.max_batch_cost,
                      help="a batch's search work, beams x (source + most target tokens) summed (default 8192)")
    http.add_argument("--deadline", type=POSITIVE_NUMBER, default=Limits.deadline_s,
                      help="seconds a request may wait and run; then 504 and its search stops (default 30)")
    http.add_argument("--header-timeout", type=POSITIVE_NUMBER, default=ConnectionLimits.header_timeout_s,
                      help="seconds for a request's head to arrive; then the connection closes (default 10)")
    http.add_argument("--body-timeout", type=POSITIVE_NUMBER, default=Limits.body_timeout_s,
                      help="seconds for the rest of a body to arrive; then 408 (default 10)")
    http.add_argument("--keep-alive", type=POSITIVE_NUMBER, default=ConnectionLimits.keep_alive_s,
                      help="seconds an idle keep-alive connection stays open (default 5)")
    http.add_argument("--max-connections", type=POSITIVE, default=ConnectionLimits.max_connections,
                      help="open connections; one more is answered 503 (default 1000)")
    http.add_argument("--max-wait-ms", type=NON_NEGATIVE_NUMBER, default=2.0, help="how long a batch waits for company")
    http.add_argument("--max-queue", type=POSITIVE, default=1024, help="queued sentences per model before 503")
    http.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                      help="uvicorn's log level (default info)")
    http.set_defaults(run=http_command)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
