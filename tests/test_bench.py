"""The CTranslate2 converter (same greedy tokens as ours) and a run of the benchmark on a tiny model."""

import json
import shutil

import pytest

pytest.importorskip("torch", reason="needs torch: pip install torch==2.13.0 first (the train extra)")
pytestmark = pytest.mark.torch

import torch  # noqa: E402

from conftest import CORPUS, ROOT, tiny_config
from core.bundle import sha256_of
from core.decoding import TorchTranslator
from core.model import Transformer
from export import ExportError
from export.to_ctranslate2 import convert, max_decoding_length, source_tokens
from bench.benchmark import SCALING_BATCH_SIZES, engine_configs
from bench.benchmark import main as bench_main
from serve.loadtest import percentile

SENTENCES = [source for source, _ in CORPUS]
CAPTIONS = [("Two dogs play in the snow.", "Zwei Hunde spielen im Schnee."),
            ("A man rides a bike down the street.", "Ein Mann fährt mit dem Fahrrad die Straße entlang."),
            ("A woman is reading a book on a bench.", "Eine Frau liest ein Buch auf einer Bank."),
            ("Children are playing soccer in a park.", "Kinder spielen Fußball in einem Park."),
            ("A little girl is climbing into a wooden playhouse.",
             "Ein kleines Mädchen klettert in ein Spielhaus aus Holz."),
            ("A group of people stand in front of a building.", "Eine Gruppe von Menschen steht vor einem Gebäude.")]


def tiny_model(directory, tokenizer, **overrides):
    config = tiny_config(vocab_size=tokenizer.vocab_size, max_positions=256, **overrides)
    Transformer(config).save_pretrained(directory)
    tokenizer.save(directory)
    return directory


def test_the_benchmark_converts_again_when_the_weights_change(tmp_path, tokenizer):
    from bench.benchmark import CONVERTED_FROM, ctranslate2_model

    torch.manual_seed(0)
    model_dir = tiny_model(tmp_path / "model", tokenizer)
    folder = ctranslate2_model(model_dir, None)
    first = (folder / "model.bin").read_bytes()
    assert ctranslate2_model(model_dir, None) == folder and (folder / "model.bin").read_bytes() == first  # cached
    torch.manual_seed(1)
    Transformer(tiny_config(vocab_size=tokenizer.vocab_size, max_positions=256)).save_pretrained(model_dir)  # retrained
    assert ctranslate2_model(model_dir, None) == folder and (folder / "model.bin").read_bytes() != first
    assert (folder / CONVERTED_FROM).read_text().strip() == sha256_of(model_dir / "model.safetensors")


@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
def test_ctranslate2_greedy_and_beam_equal_ours(tmp_path, tokenizer, pre_norm):
    import ctranslate2

    model_dir = tiny_model(tmp_path / "model", tokenizer, pre_norm=pre_norm)
    out = convert(model_dir)  # verifies greedy equality on the parity sentences itself
    assert out == model_dir / "ctranslate2" and (out / "model.bin").is_file()
    engine = ctranslate2.Translator(str(out), device="cpu")
    tokens = source_tokens(tokenizer, SENTENCES, "</s>")
    ours = TorchTranslator(model_dir)
    for beam_size in (1, 4):  # one sentence at a time: each with our own length limit
        theirs = [engine.translate_batch([t], beam_size=beam_size,
                                         max_decoding_length=max_decoding_length([t], ours.config))[0] for t in tokens]
        expected = ours.translate(SENTENCES, beam_size=beam_size)
        same = sum(t.hypotheses[0] == e.tokens for t, e in zip(theirs, expected))
        assert same == len(SENTENCES) if beam_size == 1 else same >= len(SENTENCES) - 1
    with pytest.raises(ExportError, match="already exists"):
        convert(model_dir)


def test_one_wrong_weight_fails_the_ctranslate2_conversion(tmp_path, tokenizer, monkeypatch):
    import export.to_ctranslate2 as to_ctranslate2

    torch.manual_seed(0)
    model_dir = tiny_model(tmp_path / "model", tokenizer)
    build = to_ctranslate2.ctranslate2_spec

    def broken(model, tokenizer):
        spec = build(model, tokenizer)
        weight = spec.decoder.layer[0].ffn.linear_1.weight.copy()  # the spec's array shares the model's memory
        weight[0, 0] += 0.1 * abs(weight).max()  # one weight of thousands
        spec.decoder.layer[0].ffn.linear_1.weight = weight
        return spec

    monkeypatch.setattr(to_ctranslate2, "ctranslate2_spec", broken)
    with pytest.raises(ExportError, match="log-probabilities differ|disagree"):
        convert(model_dir)
    assert not (model_dir / "ctranslate2").exists()


def test_one_wrong_weight_fails_the_native_search_export(tmp_path, tokenizer, monkeypatch):
    import onnx

    import export.native_search as native_search

    torch.manual_seed(0)
    model_dir = tiny_model(tmp_path / "model", tokenizer)
    export = native_search.subgraphs

    def broken(model, directory):
        encoder_file, decoder_file = export(model, directory)
        graph = onnx.load(str(decoder_file))
        weight = next(t for t in graph.graph.initializer  # the first d_model x d_model matrix: a layer's weight
                      if list(t.dims) == [model.config.d_model] * 2)
        values = onnx.numpy_helper.to_array(weight).copy()
        values[0, 0] += 0.1 * abs(values).max()  # one weight of thousands
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        onnx.save(graph, str(decoder_file))
        return encoder_file, decoder_file

    monkeypatch.setattr(native_search, "subgraphs", broken)
    with pytest.raises(ExportError, match="log-probabilities differ|differ from ours"):
        native_search.export_native_search(model_dir)
    assert not (model_dir / "native_search.onnx").exists()


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_benchmark_run_records_consistent_measurements_tables_and_charts(tmp_path):
    """The shipped en-de model on six captions: a trained model, so every float32 engine gives serve's output."""
    model_dir = tmp_path / "en-de"
    shutil.copytree(ROOT / "models" / "en-de", model_dir, ignore=shutil.ignore_patterns("history", "bench", "*.png"))
    source, reference = tmp_path / "test.src", tmp_path / "test.ref"
    source.write_text("".join(s + "\n" for s, _ in CAPTIONS), encoding="utf-8")
    reference.write_text("".join(t + "\n" for _, t in CAPTIONS), encoding="utf-8")
    bench_main(["--model", str(model_dir), "--input", str(source), "--ref", str(reference), "--sentences", "6",
                "--latency-sentences", "3", "--out", str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    results = record["results"]
    assert {result["family"] for result in results.values()} == {"serve", "native", "torch", "ctranslate2"}
    int8 = "decoder_step_int8" in json.loads((model_dir / "onnx" / "manifest.json").read_text())["graphs"]
    assert record["sentences"] == 6 and len(results) == len(engine_configs(record["cpu_count"], int8))
    assert ("serve int8" in record["summary"]) == int8

    # The same weights: torch and the native loop give serve's output in both modes, CTranslate2 float32 at least
    # greedy, and equal outputs score the same BLEU.
    serve = results[record["summary"]["serve"]]["modes"]
    assert serve["beam5"]["bleu"] > 10
    for name, result in results.items():
        exact = (["greedy", "beam5"] if result["family"] != "ctranslate2" else ["greedy"] if "float32" in name else []
                 ) if "int8" not in name else []
        for mode in exact:
            assert result["modes"][mode]["same_as_serve"] == 6, (name, mode)
            assert result["modes"][mode]["bleu"] == serve[mode]["bleu"], (name, mode)
        for mode in result["modes"].values():
            latencies = mode["batch1_latencies_ms"]
            assert len(latencies) == 3
            assert mode["batch1_p50_ms"] == pytest.approx(percentile(latencies, 50), abs=0.01)
            assert mode["batch1_p95_ms"] == pytest.approx(percentile(latencies, 95), abs=0.01)
            # target tokens per sentence: at least the EOS, at most the length limit
            assert 1 <= mode["target_tokens_per_second"] / mode["sentences_per_second"] <= 1.5 * 40 + 10
        assert result["peak_rss_mb"] > 10
    for result in results.values():
        if "by_batch_size" in result:
            assert [int(size) for size in result["by_batch_size"]] == list(SCALING_BATCH_SIZES)

    # The ratios are the ones the recorded figures give, against the best engine of each family.
    summary = record["summary"]
    for mode in ("greedy", "beam5"):
        for family in ("ctranslate2", "torch"):
            best = max((r for r in results.values() if r["family"] == family),
                       key=lambda r: r["modes"][mode]["sentences_per_second"])
            assert summary[f"{mode} {family} best"] in results
            assert summary[f"{mode} serve/{family} throughput"] == pytest.approx(
                serve[mode]["sentences_per_second"] / best["modes"][mode]["sentences_per_second"], abs=1e-3)

    table = (tmp_path / "out" / "benchmark.md").read_text()
    for name, result in results.items():  # one row per engine, with its measured throughput
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {result['modes']['beam5']['sentences_per_second']} |" in row
    width, height = png_size(tmp_path / "out" / "benchmark.png")
    assert width == 13 * 110 and height > 300  # figsize 13 inches at 110 dpi, one bar per engine
    assert png_size(tmp_path / "out" / "benchmark-scaling.png") == (13 * 110, int(4.5 * 110))


def test_native_search_graph_gives_our_tokens_alone_and_in_a_batch(tmp_path, tokenizer):
    from export.native_search import NativeSearch, export_native_search

    torch.manual_seed(0)
    model_dir = tiny_model(tmp_path / "model", tokenizer)
    out = export_native_search(model_dir)  # verifies greedy and beam 5 on the parity sentences itself
    assert out == model_dir / "native_search.onnx" and out.is_file()
    ours = TorchTranslator(model_dir)
    native = NativeSearch(out, ours.config)
    sources = [tokenizer.encode(text) + [ours.config.eos_id] for text in SENTENCES]
    for beam_size in (1, 4):
        expected = [t.token_ids for t in ours.translate(SENTENCES, beam_size=beam_size)]
        assert [native.search([source], beam_size)[0] for source in sources] == expected
    # A batch pads its sources and takes the longest one's length limit: this untrained model never ends a sentence,
    # so greedy runs on past each one's own limit, through the same tokens.
    batched, greedy = native.search(sources, 1), [t.token_ids for t in ours.translate(SENTENCES, beam_size=1)]
    assert [found[: len(ids)] for found, ids in zip(batched, greedy)] == greedy
    assert any(len(found) > len(ids) for found, ids in zip(batched, greedy))
    with pytest.raises(ExportError, match="already exists"):
        export_native_search(model_dir)
