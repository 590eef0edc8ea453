import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install torch==2.13.0 first (the train extra)")
pytestmark = pytest.mark.torch
import onnx  # noqa: E402 - after the torch check: both come with the export extra

from conftest import ROOT, tiny_config
from core.decoding import TorchBackend, TorchTranslator
from core.heads import HEAD_KINDS, HeadMask, trace_output_names
from core.model import Transformer
from export import ExportError, ParityError, export_bundle
from export.__main__ import main as export_main
from export.onnx_export import verify_parity
from serve import Translator
from core.bundle import BundleError, OnnxBackend

SENTENCES = ["A man rides a bike.", "Zwei Hunde spielen im Schnee.", "Kinder!"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    directory = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    Transformer(tiny_config(vocab_size=tokenizer.vocab_size, max_positions=256)).save_pretrained(directory)
    tokenizer.save(directory)
    return directory


@pytest.fixture(scope="module")
def bundle(model_dir):
    manifest = export_bundle(model_dir, sentences=SENTENCES)
    return model_dir / "onnx", manifest


def test_bundle_is_self_contained_and_described(bundle):
    directory, manifest = bundle
    names = {"encoder.onnx", "decoder_step.onnx", "teacher_forced.onnx", "encoder.int8.onnx",
             "decoder_step.int8.onnx", "weights.bin", "weights.int8.bin", "tokenizer.json", "config.json"}
    assert set(manifest["files"]) == names
    assert manifest["format_version"] == 5
    assert json.loads((directory / "manifest.json").read_text()) == manifest
    assert manifest["opset"] >= 17
    assert manifest["special_tokens"] == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    encoder = manifest["graphs"]["encoder"]
    assert [i["name"] for i in encoder["inputs"]] == ["source_ids", "encoder_head_mask"]
    assert encoder["inputs"][1]["shape"] == ["batch", 2, 2]
    assert [o["name"] for o in encoder["outputs"]] == ["cross_keys", "cross_values"]
    teacher_forced = manifest["graphs"]["teacher_forced"]
    assert [i["name"] for i in teacher_forced["inputs"]] == [
        "source_ids", "target_ids", "encoder_head_mask", "decoder_head_mask", "cross_head_mask"]
    outputs = {o["name"]: o for o in teacher_forced["outputs"]}
    assert outputs["decoder_attentions"] == {"name": "decoder_attentions", "dtype": "float32",
                                             "shape": [2, "batch", 2, "target_length", "target_length"]}
    assert outputs["cross_trace_keys"]["shape"] == [2, "batch", 2, "source_length", 8]
    assert outputs["encoder_trace_head_outputs"]["shape"] == [2, "batch", 2, "source_length", 16]
    assert len(outputs) == 4 + 3 * 6
    step = manifest["graphs"]["decoder_step"]
    assert step["top_k"] == 32
    assert [i["name"] for i in step["inputs"]] == ["target_ids", "source_mask", "decoder_head_mask",
                                                   "cross_head_mask", "top_k", "past_key_0", "past_value_0",
                                                   "past_key_1", "past_value_1", "cross_key_0", "cross_value_0",
                                                   "cross_key_1", "cross_value_1"]
    assert step["inputs"][4] == {"name": "top_k", "dtype": "int64", "shape": []}
    assert step["inputs"][5]["shape"] == ["batch", 2, "past_length", 8]
    assert step["outputs"][0] == {"name": "top_log_probs", "dtype": "float32", "shape": ["batch", "top_k"]}
    assert step["outputs"][1] == {"name": "top_ids", "dtype": "int64", "shape": ["batch", "top_k"]}
    assert [o["name"] for o in step["outputs"][2:]] == ["present_key_0", "present_value_0", "present_key_1",
                                                        "present_value_1"]
    for name in names:
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == manifest["files"][name]["sha256"]
    for name in ("encoder.onnx", "decoder_step.onnx", "teacher_forced.onnx", "encoder.int8.onnx",
                 "decoder_step.int8.onnx"):
        onnx.checker.check_model(str(directory / name), full_check=True)
    for name in ("encoder", "decoder_step"):  # the int8 graphs take and give what the float32 ones do
        int8 = manifest["graphs"][f"{name}_int8"]
        assert int8["file"] == f"{name}.int8.onnx" and int8["precision"] == "int8"
        assert (int8["inputs"], int8["outputs"]) == (manifest["graphs"][name]["inputs"], manifest["graphs"][name]["outputs"])
    assert manifest["graphs"]["decoder_step_int8"]["top_k"] == 32


def test_parity_figures_are_recorded(bundle):
    parity = bundle[1]["parity"]
    assert parity["greedy_tokens_equal"]
    assert parity["max_log_prob_difference"] <= 2e-5
    assert parity["max_step_log_prob_difference"] <= 2e-5
    assert parity["max_trace_difference"] <= 2e-5
    assert parity["max_attention_difference"] <= 1e-5
    assert {shape["batch"] for shape in parity["checked_shapes"]} == {1, len(SENTENCES)}
    int8 = parity["int8"]
    assert int8["linear_layers"] == {"encoder": 2 * 6 + 2 * 2, "decoder_step": 2 * 8 + 1}  # + cross K/V, projection
    assert int8["top1_agreement"] >= 0.9 and int8["steps"] > len(SENTENCES) and int8["batch_independent"]


def weight_matmuls(graph) -> int:
    """MatMul/Gemm nodes whose second input is an initializer or an initializer transposed."""
    initializers = {tensor.name for tensor in graph.initializer}
    transposed = {node.output[0] for node in graph.node if node.op_type == "Transpose" and node.input[0] in initializers}
    return sum(node.op_type in ("MatMul", "Gemm") and node.input[1] in initializers | transposed for node in graph.node)


def test_the_int8_pass_rewrites_every_weight_matmul(bundle):
    directory, manifest = bundle
    for name in ("encoder", "decoder_step"):
        float32, int8 = (onnx.load(str(directory / file)).graph for file in (f"{name}.onnx", f"{name}.int8.onnx"))
        operators = [node.op_type for node in int8.node]
        assert weight_matmuls(float32) == manifest["parity"]["int8"]["linear_layers"][name]
        assert weight_matmuls(int8) == 0
        assert 0 < operators.count("MatMulIntegerToFloat") < weight_matmuls(float32)  # layers reading one input: one


def test_int8_translations_do_not_depend_on_batch_mates(bundle):
    translator = Translator(bundle[0], precision="int8", workers=1)
    assert translator.precision == "int8" and translator.backend.decoder_step._model_path.endswith(".int8.onnx")
    texts = SENTENCES + ["Two dogs play in the snow.", "The café opens at 9:30, doesn't it?", "A woman is reading."]
    for beam_size in (1, 3):
        batched = translator.translate(texts, beam_size=beam_size, max_length=12)
        alone = [translator.translate([text], beam_size=beam_size, max_length=12)[0] for text in texts]
        assert [t.token_ids for t in batched] == [t.token_ids for t in alone]


def test_the_precision_flag_reaches_the_backend(bundle, tmp_path, monkeypatch):
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    import serve.server
    from serve.__main__ import main as serve_main

    expected = Translator(bundle[0], precision="int8").translate(SENTENCES, beam_size=2)
    done = subprocess.run([sys.executable, "-m", "serve", "translate", "--model", str(bundle[0]), "--beam", "2",
                           "--precision", "int8"], input="\n".join(SENTENCES) + "\n", capture_output=True,
                          text=True, cwd=ROOT, check=True)
    assert done.stdout == "".join(t.text + "\n" for t in expected)
    apps = []
    monkeypatch.setattr(serve.server, "run", lambda app, **settings: apps.append(app))
    serve_main(["http", "--model", str(bundle[0]), "--precision", "int8"])
    with TestClient(apps[0]) as client:
        assert client.get("/models").json()[0]["precision"] == "int8"


def test_onnx_translations_equal_pytorch(bundle, model_dir):
    onnx_results = Translator(bundle[0]).translate(SENTENCES, beam_size=3, max_length=8)
    torch_results = TorchTranslator(model_dir).translate(SENTENCES, beam_size=3, max_length=8)
    for ours, theirs in zip(onnx_results, torch_results):
        assert ours.token_ids == theirs.token_ids
        assert ours.score == pytest.approx(theirs.score, abs=1e-4)


@pytest.mark.parametrize("batch,source_length,steps", [(1, 1, 12), (3, 9, 4), (5, 30, 2)])
@pytest.mark.parametrize("heads_off", [[], [("encoder", 1, 0), ("decoder", 0, 1), ("cross", 1, 1), ("cross", 0, 0)]])
def test_graphs_accept_any_batch_source_and_cache_length(bundle, model_dir, batch, source_length, steps, heads_off):
    """Step by step with the cache, and teacher-forced, the graphs give torch's numbers, with and without heads off."""
    model = Transformer.from_pretrained(model_dir)
    runtime, _, _ = OnnxBackend.from_bundle(bundle[0])
    reference_backend = TorchBackend(model)
    head_mask = HeadMask.switched_off(heads_off, model.config)
    rng = np.random.default_rng(batch)
    source_ids = rng.integers(4, model.config.vocab_size, (batch, source_length))
    source_ids[0, source_length // 2 + 1 :] = model.config.pad_id
    targets = rng.integers(4, model.config.vocab_size, (batch, steps))
    state, reference_state = runtime.start(source_ids, head_mask), reference_backend.start(source_ids, head_mask)
    for position in range(steps):
        top_log_probs, top_ids, state = runtime.step(targets[:, position], state, 6)
        expected_log_probs, expected_ids, reference_state = reference_backend.step(targets[:, position],
                                                                                   reference_state, 6)
        np.testing.assert_allclose(top_log_probs, expected_log_probs, atol=1e-4)
        np.testing.assert_array_equal(top_ids, expected_ids)
    assert state.self_keys[0].shape[2] == steps
    outputs = runtime.teacher_forced(source_ids, targets, head_mask)
    encoded, decoded = reference_backend.teacher_forced(source_ids, targets, head_mask, traces=True)
    np.testing.assert_allclose(outputs["logits"], decoded.logits.numpy(), atol=1e-4)
    for kind, weights, trace in zip(HEAD_KINDS, (encoded.attentions, decoded.self_attentions, decoded.cross_attentions),
                                    (encoded.traces, decoded.self_traces, decoded.cross_traces)):
        np.testing.assert_allclose(outputs[f"{kind}_attentions"], weights.numpy(), atol=1e-5)
        for name, part in zip(trace_output_names(kind), trace.parts()):
            np.testing.assert_allclose(outputs[name], part.numpy(), atol=1e-4, err_msg=name)


def test_all_heads_on_is_the_plain_model_bit_for_bit(model_dir):
    model = Transformer.from_pretrained(model_dir)
    source = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 0]])
    target = torch.tensor([[1, 5, 6], [1, 7, 2]])
    masks = [torch.from_numpy(part) for part in HeadMask.all_on(model.config).rows(2).parts()]
    with torch.no_grad():
        plain = model.encode(source, output_attentions=True)
        masked = model.encode(source, output_attentions=True, head_mask=masks[0])
        assert torch.equal(plain.memory, masked.memory) and torch.equal(plain.attentions, masked.attentions)
        cache = model.start_cache(plain.memory)
        plain_out = model.decode(target, plain.source_mask, cache, output_attentions=True)
        masked_out = model.decode(target, plain.source_mask, cache, output_attentions=True, self_head_mask=masks[1],
                                  cross_head_mask=masks[2])
    assert torch.equal(plain_out.logits, masked_out.logits)
    assert torch.equal(plain_out.cross_attentions, masked_out.cross_attentions)


def test_a_switched_off_head_contributes_only_the_output_bias(model_dir):
    """Off, a head's output is zero before W^O: the sublayer output is the other heads' shares plus the bias."""
    model = Transformer.from_pretrained(model_dir)
    backend = TorchBackend(model)
    source, target = np.array([[5, 6, 7, 2]]), np.array([[1, 5, 6]])
    head_mask = HeadMask.switched_off([("cross", 1, 0)], model.config)
    on = backend.trace(source, target)["cross"]
    off = backend.trace(source, target, head_mask)["cross"]
    assert not off.heads[1, :, 0].any() and not off.head_outputs[1, :, 0].any()
    assert off.heads[1, :, 1].any() and on.heads[1, :, 0].any()
    layer = model.decoder_layers[1].cross_attention
    with torch.no_grad():
        output = layer.project_output(torch.from_numpy(off.heads[1]))  # [B, T, D]
    np.testing.assert_allclose(output.numpy(), off.head_outputs[1].sum(axis=1) + layer.w_o.bias.detach().numpy(),
                               atol=1e-5)


def test_every_weight_is_stored_once_in_the_whole_bundle(bundle):
    """The graphs hold no weights: each one points into weights.bin (float32) or weights.int8.bin (what only the int8
    graphs use), where every tensor is stored once, whichever graphs read it."""
    from export.weights import ALIGNMENT, is_weight, key_of, stored_at

    directory, manifest = bundle
    ranges, reads = {}, {}
    for key, entry in manifest["graphs"].items():
        graph = onnx.load(str(directory / entry["file"]), load_external_data=False).graph
        inline = [t.name for t in graph.initializer if stored_at(t)[0] is None
                  and is_weight(onnx.numpy_helper.to_array(t))]
        assert inline == [], (key, inline)
        places = {stored_at(t) for t in graph.initializer if stored_at(t)[0] is not None}
        reads[key] = {location for location, _, _ in places}
        assert sorted(reads[key]) == entry["weights"]
        ranges.update({place: key for place in places})
    assert reads["encoder"] == reads["decoder_step"] == reads["teacher_forced"] == {"weights.bin"}
    assert reads["encoder_int8"] == reads["decoder_step_int8"] == {"weights.bin", "weights.int8.bin"}
    contents = []
    for name in ("weights.bin", "weights.int8.bin"):
        data = (directory / name).read_bytes()
        places = sorted((offset, length) for location, offset, length in ranges if location == name)
        assert all(offset % ALIGNMENT == 0 for offset, _ in places)
        assert all(a + n <= b for (a, n), (b, _) in zip(places, places[1:]))  # no overlap
        assert len(data) - sum(n for _, n in places) < ALIGNMENT * len(places)  # nothing but weights and padding
        contents += [data[offset: offset + length] for offset, length in places]
    assert len(contents) == len(set(contents))  # no tensor twice
    model = Transformer.from_pretrained(directory.parent)
    stored = {key_of(onnx.numpy_helper.to_array(t))[2] for entry in
              manifest["graphs"].values() for t in onnx.load(str(directory / entry["file"])).graph.initializer}
    assert model.embedding.weight.detach().numpy().tobytes() in stored


def test_the_teacher_forced_graph_loads_on_first_use(bundle):
    translator = Translator(bundle[0], workers=1)
    assert translator.backend._teacher_forced_graph is None
    translator.translate(SENTENCES, beam_size=2)
    assert translator.backend._teacher_forced_graph is None  # the search alone never loads it
    (result,) = translator.translate(SENTENCES[:1], beam_size=2, return_attention=True)
    assert result.attention is not None and translator.backend._teacher_forced_graph is not None


def test_an_older_bundle_format_is_refused_with_a_way_out(bundle, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(bundle[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(BundleError, match="format_version 1; this version reads 5: export the model again"):
        Translator(copy)


def test_beam_wider_than_the_step_graph_allows_is_refused(bundle):
    with pytest.raises(ValueError, match="beam_size must be an integer between 1 and 16, got 17"):
        Translator(bundle[0]).translate(SENTENCES[:1], beam_size=17)


def test_checksum_mismatch_names_the_file(bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle[0], copy)
    data = bytearray((copy / "teacher_forced.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "teacher_forced.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="teacher_forced.onnx does not match its sha256"):
        Translator(copy)
    shutil.copy(bundle[0] / "teacher_forced.onnx", copy / "teacher_forced.onnx")
    (copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is listed in the manifest but missing"):
        Translator(copy)
    with pytest.raises(BundleError, match="not an exported bundle"):
        Translator(tmp_path)


def test_one_perturbed_weight_fails_the_parity_check(bundle, model_dir, tokenizer):
    model = Transformer.from_pretrained(model_dir)
    with torch.no_grad():
        weight = model.decoder_layers[0].feed_forward.linear_out.weight
        weight[0, 0] += 0.1 * weight.abs().max()  # one weight of thousands
    with pytest.raises(ParityError, match="log-probabilities differ"):
        verify_parity(model, tokenizer, bundle[0], SENTENCES)


def test_large_logits_pass_the_parity_check(tokenizer, tmp_path):
    """The tolerance scales with the values: logits of std ~10 (real models have them) agree as closely, relative to
    their size, as small ones (an absolute 1e-4 failed such a model at 1.3e-4)."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(vocab_size=tokenizer.vocab_size, max_positions=256, pre_norm=True))
    with torch.no_grad():
        model.decoder_norm.weight.mul_(30.0)  # the output projection reads it: every logit 30 times larger
    model.save_pretrained(tmp_path / "model")
    tokenizer.save(tmp_path / "model")
    reloaded = Transformer.from_pretrained(tmp_path / "model").eval()
    ids = torch.tensor([tokenizer.encode(SENTENCES[0]) + [2]])
    with torch.no_grad():
        assert reloaded(ids, torch.tensor([[1, 5, 6]])).std() > 5
    manifest = export_bundle(tmp_path / "model", tmp_path / "bundle", sentences=SENTENCES)
    assert manifest["parity"]["max_log_prob_difference"] <= 2e-5


def test_refuses_to_overwrite_without_force(bundle, model_dir, capsys):
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(model_dir)
    with pytest.raises(SystemExit, match="pass --force"):
        export_main([str(model_dir)])


def test_force_overwrites(model_dir, tmp_path, capsys):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_main([str(model_dir), "--out", str(out), "--force"])
    assert not (out / "stale.txt").exists()
    assert "greedy tokens equal" in capsys.readouterr().out


def test_clear_errors_for_bad_model_folders(tmp_path, model_dir):
    with pytest.raises(ExportError, match="cannot load the model folder"):
        export_bundle(tmp_path / "missing", tmp_path / "out")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"vocab_size": "many"}')
    with pytest.raises(ExportError, match="cannot load"):
        export_bundle(broken, tmp_path / "out2")
    with pytest.raises(ExportError, match="opset"):
        export_bundle(model_dir, tmp_path / "out3", opset=13)


SHIPPED = sorted(p.parent.parent for p in (ROOT / "models").glob("*/onnx/manifest.json"))


@pytest.mark.parametrize("model_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_bundles_verify_and_match_pytorch(model_dir):
    sentences = ["Ein Mann fährt Fahrrad.", "Two dogs play in the snow.", "Eine Frau liest ein Buch im Park."]
    onnx_results = Translator(model_dir / "onnx").translate(sentences, beam_size=4)
    torch_results = TorchTranslator(model_dir).translate(sentences, beam_size=4)
    assert [r.token_ids for r in onnx_results] == [r.token_ids for r in torch_results]


def test_language_pair_is_recorded(model_dir, tmp_path):
    manifest = export_bundle(model_dir, tmp_path / "pair", sentences=SENTENCES[:1], source_lang="en", target_lang="de")
    assert manifest["languages"] == {"source": "en", "target": "de"}
    assert Translator(tmp_path / "pair").source_lang == "en"
    with pytest.raises(ExportError, match="both"):
        export_bundle(model_dir, tmp_path / "half", source_lang="en")


@pytest.mark.parametrize("width,k,max_k", [(8000, 32, 32), (8000, 10, 32), (256, 8, 8), (64, 2, 2),
                                           (200, 4, 4)])  # 200: not blocks of 32, plain topk
def test_blocked_top_k_equals_torch_topk(width, k, max_k):
    from export.onnx_export import blocked_top_k

    generator = torch.Generator().manual_seed(width)
    scores = torch.randn(9, width, generator=generator).log_softmax(-1)
    values, ids = blocked_top_k(scores, k, max_k)
    expected = scores.topk(k, dim=-1)
    torch.testing.assert_close(values, expected.values, rtol=0, atol=0)
    assert torch.equal(ids, expected.indices)
    tied = torch.zeros(2, width)  # every score equal: any k ids are right, each once, values all equal
    values, ids = blocked_top_k(tied, k, max_k)
    assert (values == 0).all() and all(len(set(row.tolist())) == k for row in ids)
