"""Score a model folder on a test set the way papers do.

    python -m core.evaluate --model models/en-de --src test.en --ref test.de --ref-tok tok/test.lc.norm.tok.de

The last line printed is a JSON object with:
  sacrebleu      cased BLEU of the detokenized output against the raw references (sacreBLEU defaults), with its
                 signature: the score to compare across papers that report sacreBLEU;
  chrf           chrF2 on the same detokenized text;
  bleu_tok_lc    only with --ref-tok: the output punctuation-normalized, Moses-tokenized (sacremoses) and
                 lowercased, scored against the lowercased tokenized references with no further tokenization.
                 This is how published Multi30K numbers are computed; never compare it with sacrebleu.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import sacrebleu

from .bundle import MANIFEST_FILE, PRECISIONS, OnnxBackend
from .data import read_lines
from .translator import BaseTranslator, available_cores


def tokenize_lowercase(texts: Sequence[str], lang: str) -> list[str]:
    """Moses punctuation normalization, Moses tokenization (with its HTML escaping) and lowercasing."""
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    normalizer, tokenizer = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    return [tokenizer.tokenize(normalizer.normalize(text), escape=True, return_str=True).lower() for text in texts]


def score(hypotheses: Sequence[str], references: Sequence[str], tokenized_references: Sequence[str] | None = None,
          lang: str = "en") -> dict:
    """BLEU/chrF of detokenized hypotheses; bleu_tok_lc too when tokenized lowercased references are given."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    result = {
        "sacrebleu": round(bleu.corpus_score(list(hypotheses), [list(references)]).score, 2),
        "sacrebleu_signature": str(bleu.get_signature()),
        "chrf": round(chrf.corpus_score(list(hypotheses), [list(references)]).score, 2),
    }
    if tokenized_references is not None:
        if len(tokenized_references) != len(hypotheses):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(tokenized_references)} tokenized references")
        tokenized = tokenize_lowercase(hypotheses, lang)
        result["bleu_tok_lc"] = round(
            sacrebleu.corpus_bleu(tokenized, [list(tokenized_references)], tokenize="none", force=True).score, 2
        )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path,
                        help="model folder (PyTorch), or an exported ONNX bundle folder (onnxruntime)")
    parser.add_argument("--src", required=True, help="source sentences, one per line")
    parser.add_argument("--ref", required=True, help="reference translations, one per line")
    parser.add_argument("--ref-tok", help="lowercased Moses-tokenized references (tok/*.lc.norm.tok.*)")
    parser.add_argument("--tgt-lang", help="target language code for Moses (default: --ref's file suffix)")
    parser.add_argument("--beam", type=int, default=5, help="beam size (1: greedy)")
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="an ONNX bundle's graphs to run: float32 or its row-wise int8 ones")
    parser.add_argument("--output", type=Path, help="also write the translations here, one per line")
    parser.add_argument("--record", nargs=2, metavar=("FILE", "NAME"),
                        help="also store the result, with this command, under NAME in the JSON file FILE")
    args = parser.parse_args(argv)

    sources, references = read_lines(args.src), read_lines(args.ref)
    if len(sources) != len(references):
        sys.exit(f"{args.src} has {len(sources)} lines but {args.ref} has {len(references)}")
    tokenized_references = read_lines(args.ref_tok) if args.ref_tok else None
    lang = args.tgt_lang or Path(args.ref).suffix.lstrip(".") or "en"
    if (args.model / MANIFEST_FILE).is_file():  # an ONNX bundle, translated by onnxruntime without torch
        backend, tokenizer, _ = OnnxBackend.from_bundle(args.model, threads=1, precision=args.precision)
        translator = BaseTranslator(backend, tokenizer, workers=available_cores())
    elif args.precision != "float32":
        sys.exit(f"--precision {args.precision}: {args.model} is a PyTorch model folder, not an exported bundle")
    else:
        from .decoding import TorchTranslator

        translator = TorchTranslator(args.model, device=args.device)
    started = time.time()
    translations = translator.translate(
        sources, beam_size=args.beam, length_penalty=args.length_penalty, batch_size=args.batch_size, progress=True
    )
    seconds = time.time() - started
    hypotheses = [t.text for t in translations]
    if args.output:
        args.output.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    result = score(hypotheses, references, tokenized_references, lang)
    result.update(beam=args.beam, length_penalty=args.length_penalty, sentences=len(sources),
                  translate_seconds=round(seconds, 1), model=str(args.model), precision=args.precision, src=args.src,
                  ref=args.ref)
    if args.record:
        record(Path(args.record[0]), args.record[1], result, argv if argv is not None else sys.argv[1:])
    print(json.dumps(result))


def record(path: Path, name: str, result: dict, argv: list[str]) -> None:
    """Merge result into the JSON object in path (created if missing) under name, with the reproducing command."""
    import shlex

    recorded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    recorded[name] = dict(result, command="python -m core.evaluate " + shlex.join(argv))
    path.write_text(json.dumps(recorded, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
