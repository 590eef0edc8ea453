"""Benchmark serve against PyTorch and CTranslate2 on the same weights, sentences and cores.

    python -m bench --model models/en-de --input test.en [--ref test.de --ref-tok tok.de] [--engines ...]

Each engine configuration runs in its own process, one after another (peak memory is that process's max RSS):
serve (its default and one worker with every thread, in float32 and, when the bundle has them, its int8 graphs), the
same model with the whole search in one onnxruntime BeamSearch node ("native loop", ``python -m export.native_search``),
torch with its KV cache, and CTranslate2 float32 and int8 in two thread layouts (the converted models are written by
``python -m export.to_ctranslate2`` when missing). For greedy and beam
5 it measures batches of 32 (sentences/s, target tokens/s), batch 1 (p50/p95 latency) and the BLEU of the batch-32
output; for the first engine of each family also how time grows with batch size and sentence length. It writes
``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` (plus ``benchmark-scaling.png``) into the model folder
and prints the ratios serve/CTranslate2 and serve/torch. torch and ctranslate2 are imported only by their own runner
(``pip install "attention-mt[bench]"``); the native loop needs torch to build its graph.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.bundle import graph_key, load_manifest
from core.data import read_lines
from core.translator import available_cores
from serve.loadtest import percentile

BATCH_SIZE = 32
MODES = {"greedy": 1, "beam5": 5}
SCALING_BATCH_SIZES = (1, 4, 16, 32, 64)


@dataclass(frozen=True)
class EngineConfig:
    """One engine configuration: family (serve, native, torch, ctranslate2), a name for tables, and its settings."""

    family: str
    name: str
    settings: dict
    scaling: bool = False  # also measure cost against batch size and sentence length


def engine_configs(cpu_count: int, int8: bool = True) -> list[EngineConfig]:
    """Every configuration the benchmark compares (serve's are the ones it offers; its int8 ones with ``int8``)."""
    serve = [
        EngineConfig("serve", f"serve ({cpu_count} workers x 1 thread, default)", {"workers": cpu_count, "threads": 1},
                     scaling=True),
        EngineConfig("serve", f"serve (1 worker x {cpu_count} threads)", {"workers": 1, "threads": cpu_count}),
    ]
    if int8:
        serve += [
            EngineConfig("serve", f"serve int8 ({cpu_count} workers x 1 thread)",
                         {"workers": cpu_count, "threads": 1, "precision": "int8"}, scaling=True),
            EngineConfig("serve", f"serve int8 (1 worker x {cpu_count} threads)",
                         {"workers": 1, "threads": cpu_count, "precision": "int8"}),
        ]
    return [
        *serve,
        EngineConfig("native", f"native loop, BeamSearch op ({cpu_count} workers x 1 thread)",
                     {"workers": cpu_count, "threads": 1}, scaling=True),
        EngineConfig("torch", "torch (KV cache)", {"threads": cpu_count}),
        EngineConfig("ctranslate2", f"CTranslate2 float32, {cpu_count}x1 thread",
                     {"compute_type": "float32", "inter_threads": cpu_count, "intra_threads": 1}, scaling=True),
        EngineConfig("ctranslate2", f"CTranslate2 float32, 1x{cpu_count} threads",
                     {"compute_type": "float32", "inter_threads": 1, "intra_threads": cpu_count}),
        EngineConfig("ctranslate2", f"CTranslate2 int8, {cpu_count}x1 thread",
                     {"compute_type": "int8", "inter_threads": cpu_count, "intra_threads": 1}),
        EngineConfig("ctranslate2", f"CTranslate2 int8, 1x{cpu_count} threads",
                     {"compute_type": "int8", "inter_threads": 1, "intra_threads": cpu_count}),
    ]


# A runner turns (texts, beam_size, batch_size) into target token lists; built inside the worker process.
Runner = Callable[[Sequence[str], int, int], list[list[str]]]


def serve_runner(model_dir: Path, settings: dict) -> tuple[Runner, Callable[[list[str]], str]]:
    from serve import Translator

    translator = Translator(model_dir / "onnx", threads=settings["threads"], workers=settings["workers"],
                            precision=settings.get("precision", "float32"))

    def run(texts, beam_size, batch_size):
        return [t.tokens for t in translator.translate(texts, beam_size=beam_size, batch_size=batch_size)]

    return run, detokenizer(translator.tokenizer)


def native_runner(model_dir: Path, settings: dict) -> tuple[Runner, Callable[[list[str]], str]]:
    """The whole search in onnxruntime's BeamSearch node: batches by length, ``workers`` at a time, as serve does."""
    from concurrent.futures import ThreadPoolExecutor

    from core.config import TransformerConfig
    from core.tokenizer import Tokenizer
    from export.native_search import NATIVE_SEARCH_FILE, NativeSearch, export_native_search

    tokenizer = Tokenizer.load(model_dir)
    config = TransformerConfig.load(model_dir)
    folder = converted(model_dir, "native-search", lambda out: export_native_search(
        model_dir, out / NATIVE_SEARCH_FILE, force=True))
    native = NativeSearch(folder / NATIVE_SEARCH_FILE, config, threads=settings["threads"])
    pool = ThreadPoolExecutor(settings["workers"])

    def run(texts, beam_size, batch_size):
        sources = [tokenizer.encode(text) + [config.eos_id] for text in texts]
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        found: list[list[str]] = [[] for _ in texts]
        for batch, ids in zip(batches, pool.map(lambda b: native.search([sources[i] for i in b], beam_size), batches)):
            for i, tokens in zip(batch, ids):
                found[i] = [tokenizer.id_to_token(token) for token in tokens]
        return found

    return run, detokenizer(tokenizer)


def torch_runner(model_dir: Path, settings: dict) -> tuple[Runner, Callable[[list[str]], str]]:
    import torch

    from core.decoding import TorchTranslator

    torch.set_num_threads(settings["threads"])
    translator = TorchTranslator(model_dir)

    def run(texts, beam_size, batch_size):
        return [t.tokens for t in translator.translate(texts, beam_size=beam_size, batch_size=batch_size)]

    return run, detokenizer(translator.tokenizer)


def ctranslate2_runner(model_dir: Path, settings: dict) -> tuple[Runner, Callable[[list[str]], str]]:
    import ctranslate2

    from core.config import TransformerConfig
    from core.tokenizer import Tokenizer
    from export.to_ctranslate2 import max_decoding_length, source_tokens

    tokenizer = Tokenizer.load(model_dir)
    config = TransformerConfig.load(model_dir)
    quantization = None if settings["compute_type"] == "float32" else settings["compute_type"]
    engine = ctranslate2.Translator(str(ctranslate2_model(model_dir, quantization)), device="cpu",
                                    compute_type=settings["compute_type"], inter_threads=settings["inter_threads"],
                                    intra_threads=settings["intra_threads"])
    eos = tokenizer.id_to_token(config.eos_id)

    def run(texts, beam_size, batch_size):
        tokens = source_tokens(tokenizer, list(texts), eos)
        results = engine.translate_batch(tokens, beam_size=beam_size, max_batch_size=batch_size,
                                         max_decoding_length=max_decoding_length(tokens, config))
        return [result.hypotheses[0] for result in results]

    return run, detokenizer(tokenizer)


def ctranslate2_model(model_dir: Path, quantization: str | None) -> Path:
    """The converted CTranslate2 model folder (see :func:`converted`)."""
    from export.to_ctranslate2 import CTRANSLATE2_DIR, convert

    return converted(model_dir, CTRANSLATE2_DIR + (f"-{quantization}" if quantization else ""),
                     lambda folder: convert(model_dir, folder, quantization=quantization, force=True))


def converted(model_dir: Path, name: str, convert: Callable[[Path], object]) -> Path:
    """model_dir/bench/name, written by ``convert(folder)`` on first use and again whenever the weights change (the
    folder records the sha256 of the model.safetensors it was converted from)."""
    from core.bundle import sha256_of

    folder = model_dir / "bench" / name
    stamp, weights = folder / CONVERTED_FROM, sha256_of(model_dir / "model.safetensors")
    if not stamp.exists() or stamp.read_text().strip() != weights:
        folder.mkdir(parents=True, exist_ok=True)
        convert(folder)
        stamp.write_text(weights + "\n")
    return folder


CONVERTED_FROM = "converted_from.sha256"  # in a cached CTranslate2 folder: the weights it was converted from
RUNNERS = {"serve": serve_runner, "native": native_runner, "torch": torch_runner, "ctranslate2": ctranslate2_runner}


def detokenizer(tokenizer) -> Callable[[list[str]], str]:
    return lambda tokens: tokenizer.decode([tokenizer.token_to_id(token) for token in tokens])


def measure(config: EngineConfig, model_dir: Path, texts: list[str], latency_count: int) -> dict:
    """Run in the worker process: every measurement of one engine configuration."""
    started = time.perf_counter()
    run, detokenize = RUNNERS[config.family](model_dir, config.settings)
    result = {"load_seconds": round(time.perf_counter() - started, 3), "modes": {}}
    run(texts[:BATCH_SIZE], 5, BATCH_SIZE)  # warm-up
    for mode, beam_size in MODES.items():
        started = time.perf_counter()
        outputs = run(texts, beam_size, BATCH_SIZE)
        seconds = time.perf_counter() - started
        latencies = []
        for text in texts[:latency_count]:
            started = time.perf_counter()
            run([text], beam_size, 1)
            latencies.append(time.perf_counter() - started)
        tokens = sum(len(output) + 1 for output in outputs)  # EOS counted, as every engine produces it
        result["modes"][mode] = {
            "sentences_per_second": round(len(texts) / seconds, 2),
            "target_tokens_per_second": round(tokens / seconds, 1),
            "batch1_p50_ms": round(1000 * percentile(latencies, 50), 2),
            "batch1_p95_ms": round(1000 * percentile(latencies, 95), 2),
            "batch1_latencies_ms": [round(1000 * x, 3) for x in latencies],
            "outputs": [detokenize(output) for output in outputs],
        }
    if config.scaling:
        sample = texts[: min(len(texts), 256)]
        result["by_batch_size"] = {}
        for batch_size in SCALING_BATCH_SIZES:
            started = time.perf_counter()
            run(sample, 5, batch_size)
            result["by_batch_size"][batch_size] = round(len(sample) / (time.perf_counter() - started), 2)
    return result


def run_worker(config: EngineConfig, model_dir: Path, input_path: Path, sentences: int, latency_count: int,
               out: Path) -> dict:
    """Run one configuration in a fresh process; returns its measurements and peak memory."""
    command = [sys.executable, "-m", "bench", "--worker", json.dumps(asdict(config)), "--model",
               str(model_dir), "--input", str(input_path), "--sentences", str(sentences), "--latency-sentences",
               str(latency_count), "--worker-out", str(out)]
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{config.name} failed (exit status {process.returncode})")
    result = json.loads(out.read_text(encoding="utf-8"))
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports kilobytes
    return result


def score_outputs(results: dict, references: list[str] | None, tokenized: list[str] | None, lang: str) -> None:
    if references is None:
        return
    from core.evaluate import score

    for result in results.values():
        for mode in result["modes"].values():
            metrics = score(mode["outputs"], references, tokenized, lang)
            mode["bleu"] = metrics.get("bleu_tok_lc", metrics["sacrebleu"])
            mode["bleu_metric"] = "bleu_tok_lc" if tokenized is not None else "sacrebleu"


def best_of(results: dict, family: str, mode: str) -> tuple[str, dict]:
    candidates = [(name, r) for name, r in results.items() if r["family"] == family]
    return max(candidates, key=lambda item: item[1]["modes"][mode]["sentences_per_second"])


def ratios(results: dict) -> dict:
    """serve's default configuration (and its first int8 one, as "serve int8", and the native loop) against
    CTranslate2's best and torch, per mode (higher is better for serve)."""
    summary = {}
    for label, family, precision in (("serve", "serve", "float32"), ("serve int8", "serve", "int8"),
                                     ("native loop", "native", "float32")):
        serve_name = next((name for name, r in results.items()
                           if r["family"] == family and r["settings"].get("precision", "float32") == precision), None)
        if serve_name is None:
            continue
        serve = results[serve_name]["modes"]
        summary[label] = serve_name
        for mode in MODES:
            for family in ("ctranslate2", "torch"):
                if any(r["family"] == family for r in results.values()):
                    name, other = best_of(results, family, mode)
                    summary[f"{mode} {label}/{family} throughput"] = round(
                        serve[mode]["sentences_per_second"] / other["modes"][mode]["sentences_per_second"], 3)
                    summary[f"{mode} {family} best"] = name
                    summary[f"{mode} {family}/{label} batch-1 p50"] = round(
                        other["modes"][mode]["batch1_p50_ms"] / serve[mode]["batch1_p50_ms"], 3)
    return summary


def markdown_table(results: dict, summary: dict, header: str) -> str:
    lines = [header, "",
             "| engine | greedy sent/s | greedy tok/s | beam 5 sent/s | beam 5 tok/s | batch-1 greedy p50/p95 ms | "
             "batch-1 beam-5 p50/p95 ms | peak RSS MB | BLEU greedy / beam 5 | same output as serve (greedy / beam 5) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, result in results.items():
        greedy, beam = result["modes"]["greedy"], result["modes"]["beam5"]
        bleu = f"{greedy.get('bleu', '–')} / {beam.get('bleu', '–')}"
        lines.append(f"| {name} | {greedy['sentences_per_second']} | {greedy['target_tokens_per_second']} | "
                     f"{beam['sentences_per_second']} | {beam['target_tokens_per_second']} | "
                     f"{greedy['batch1_p50_ms']} / {greedy['batch1_p95_ms']} | "
                     f"{beam['batch1_p50_ms']} / {beam['batch1_p95_ms']} | {result['peak_rss_mb']} | {bleu} | "
                     f"{greedy['same_as_serve']} / {beam['same_as_serve']} |")
    lines += ["", "Ratios (serve's default configuration, measured in this run):", ""]
    lines += [f"- {key}: {value}" for key, value in summary.items() if key not in ("serve", "serve int8", "native loop")]
    return "\n".join(lines) + "\n"


def plot(results: dict, texts: list[str], model_dir: Path, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    figure, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 2.2))
    for axis, mode, title in ((axes[0], "greedy", "greedy"), (axes[1], "beam5", "beam 5")):
        values = [results[name]["modes"][mode]["sentences_per_second"] for name in names]
        colors = [{"serve": "tab:blue", "native": "tab:green", "torch": "tab:orange", "ctranslate2": "tab:gray"}[
                      results[n]["family"]]
                  if results[n]["settings"].get("precision") != "int8" else "tab:cyan" for n in names]
        axis.barh(names, values, color=colors)
        axis.invert_yaxis()
        axis.set_xlabel(f"sentences/s, batch {BATCH_SIZE}")
        axis.set_title(title)
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:.0f}", va="center")
    figure.suptitle(f"{model_dir.name}: throughput on {len(texts)} sentences")
    figure.tight_layout()
    paths = [out_dir / "benchmark.png"]
    figure.savefig(paths[0], dpi=110)
    plt.close(figure)

    from core.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(model_dir)
    figure, (by_batch, by_length) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, result in results.items():
        if "by_batch_size" not in result:
            continue
        sizes = [int(size) for size in result["by_batch_size"]]
        by_batch.plot(sizes, [1000 / v for v in result["by_batch_size"].values()], marker="o", label=name)
        latencies = result["modes"]["beam5"]["batch1_latencies_ms"]
        lengths = np.array([len(tokenizer.encode(text)) + 1 for text in texts[: len(latencies)]])
        buckets = sorted(set(np.minimum(lengths // 5 * 5, 40)))
        by_length.plot(buckets, [np.median(np.array(latencies)[np.minimum(lengths // 5 * 5, 40) == b]) for b in buckets],
                       marker="o", label=name)
    by_batch.set(xscale="log", xlabel="batch size (beam 5)", ylabel="ms per sentence", title="cost vs batch size")
    by_length.set(xlabel="source tokens (bucket of 5; 40 = 40+)", ylabel="ms (median, batch 1, beam 5)",
                  title="cost vs sentence length")
    for axis in (by_batch, by_length):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    paths.append(out_dir / "benchmark-scaling.png")
    figure.savefig(paths[1], dpi=110)
    plt.close(figure)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder with onnx/ (and model.safetensors)")
    parser.add_argument("--input", type=Path, required=True, help="source sentences, one per line")
    parser.add_argument("--ref", type=Path, help="references, for BLEU")
    parser.add_argument("--ref-tok", type=Path, help="lowercased tokenized references (bleu_tok_lc)")
    parser.add_argument("--lang", default="de", help="target language for Moses tokenization (default de)")
    parser.add_argument("--sentences", type=int, default=0, help="use the first N sentences (default: all)")
    parser.add_argument("--latency-sentences", type=int, default=200, help="sentences timed one at a time")
    parser.add_argument("--engines", nargs="+", default=["serve", "native", "torch", "ctranslate2"],
                        help="families to run (default: all)")
    parser.add_argument("--out", type=Path, help="folder for the results (default: the model folder)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    texts = read_lines(args.input)[: args.sentences or None]
    if args.worker:
        config = EngineConfig(**json.loads(args.worker))
        result = measure(config, args.model, texts, args.latency_sentences)
        args.worker_out.write_text(json.dumps(result), encoding="utf-8")
        return

    cpu_count = available_cores()
    int8 = graph_key("decoder_step", "int8") in load_manifest(args.model / "onnx")["graphs"]
    if not int8 and "serve" in args.engines:
        print(f"{args.model / 'onnx'} has no int8 graphs (exported before them): no serve int8 rows", file=sys.stderr)
    configs = [config for config in engine_configs(cpu_count, int8) if config.family in args.engines]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for index, config in enumerate(configs):
            print(f"[{index + 1}/{len(configs)}] {config.name}", file=sys.stderr, flush=True)
            result = run_worker(config, args.model, args.input, len(texts), args.latency_sentences,
                                Path(scratch) / f"{index}.json")
            results[config.name] = {"family": config.family, "settings": config.settings, **result}
    references = read_lines(args.ref)[: len(texts)] if args.ref else None
    tokenized = read_lines(args.ref_tok)[: len(texts)] if args.ref_tok else None
    score_outputs(results, references, tokenized, args.lang)
    summary = ratios(results)
    out_dir = args.out or args.model
    out_dir.mkdir(parents=True, exist_ok=True)
    header = (f"Benchmark of {args.model} on {len(texts)} sentences of {args.input.name}, {cpu_count} CPU cores, "
              f"batch {BATCH_SIZE} and batch 1, `python -m bench` ({time.strftime('%Y-%m-%d')})")
    serve_outputs = results[summary["serve"]]["modes"]
    for result in results.values():
        for mode_name, mode in result["modes"].items():
            mode["same_as_serve"] = sum(a == b for a, b in zip(mode["outputs"], serve_outputs[mode_name]["outputs"]))
    record = {"model": str(args.model), "input": str(args.input), "sentences": len(texts), "cpu_count": cpu_count,
              "batch_size": BATCH_SIZE, "summary": summary,
              "results": {name: {**r, "modes": {m: {k: v for k, v in d.items() if k != "outputs"}
                                                for m, d in r["modes"].items()}} for name, r in results.items()}}
    (out_dir / "benchmark.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    table = markdown_table(results, summary, header)
    (out_dir / "benchmark.md").write_text(table, encoding="utf-8")
    plot(results, texts, args.model, out_dir)
    print(table)

