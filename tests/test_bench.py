"""The CTranslate2 converter (same greedy tokens as ours) and a smoke run of the benchmark on a tiny model."""

import json

import pytest

from conftest import CORPUS, tiny_config
from core.decoding import Translator as TorchTranslator
from core.model import Transformer
from export import ExportError, export_bundle
from export.to_ctranslate2 import convert, max_decoding_length, source_tokens
from serve.bench import main as bench_main

SENTENCES = [source for source, _ in CORPUS]


def tiny_model(directory, tokenizer, **overrides):
    config = tiny_config(vocab_size=tokenizer.vocab_size, max_positions=256, **overrides)
    Transformer(config).save_pretrained(directory)
    tokenizer.save(directory)
    return directory


@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
def test_ctranslate2_greedy_and_beam_equal_ours(tmp_path, tokenizer, pre_norm):
    import ctranslate2

    model_dir = tiny_model(tmp_path / "model", tokenizer, pre_norm=pre_norm)
    out = convert(model_dir)  # verifies greedy equality on the parity sentences itself
    assert out == model_dir / "ctranslate2" and (out / "model.bin").is_file()
    engine = ctranslate2.Translator(str(out), device="cpu")
    tokens = source_tokens(tokenizer, SENTENCES, "</s>")
    ours = TorchTranslator.from_pretrained(model_dir)
    for beam_size in (1, 4):  # one sentence at a time: each with our own length limit
        theirs = [engine.translate_batch([t], beam_size=beam_size, max_decoding_length=max_decoding_length([t], 256))[0]
                  for t in tokens]
        expected = ours.translate(SENTENCES, beam_size=beam_size)
        same = sum(t.hypotheses[0] == e.tokens for t, e in zip(theirs, expected))
        assert same == len(SENTENCES) if beam_size == 1 else same >= len(SENTENCES) - 1
    with pytest.raises(ExportError, match="already exists"):
        convert(model_dir)


def test_benchmark_smoke_run_writes_results_table_and_charts(tmp_path, tokenizer):
    model_dir = tiny_model(tmp_path / "tiny", tokenizer)
    export_bundle(model_dir, sentences=SENTENCES[:2])
    source, reference = tmp_path / "test.src", tmp_path / "test.ref"
    source.write_text("".join(s + "\n" for s, _ in CORPUS), encoding="utf-8")
    reference.write_text("".join(t + "\n" for _, t in CORPUS), encoding="utf-8")
    bench_main(["--model", str(model_dir), "--input", str(source), "--ref", str(reference), "--sentences", "4",
                "--latency-sentences", "2", "--out", str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    families = {result["family"] for result in record["results"].values()}
    assert families == {"serve", "torch", "ctranslate2"} and record["sentences"] == 4
    for result in record["results"].values():
        for mode in ("greedy", "beam5"):
            measured = result["modes"][mode]
            assert measured["sentences_per_second"] > 0 and measured["batch1_p50_ms"] > 0 and "bleu" in measured
        assert result["peak_rss_mb"] > 10
    serve = record["results"][record["summary"]["serve"]]["modes"]["greedy"]
    assert serve["same_as_serve"] == 4
    assert "beam5 serve/ctranslate2 throughput" in record["summary"]
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| serve" in table and "CTranslate2 int8" in table
    for name in ("benchmark.png", "benchmark-scaling.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000
