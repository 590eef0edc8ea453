import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install torch==2.13.0 first (the train extra)")
pytestmark = pytest.mark.torch
import onnx  # noqa: E402 - after the torch check: both come with the export extra

from conftest import ROOT, tiny_config
from core.decoding import TorchTranslator
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
    names = {"encoder.onnx", "decoder_step.onnx", "decoder.onnx", "tokenizer.json", "config.json"}
    assert set(manifest["files"]) == names
    assert manifest["format_version"] == 2
    assert json.loads((directory / "manifest.json").read_text()) == manifest
    assert manifest["opset"] >= 17
    assert manifest["special_tokens"] == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    decoder = manifest["graphs"]["decoder"]
    assert [i["name"] for i in decoder["inputs"]] == [
        "target_ids", "source_mask", "past_self_keys", "past_self_values", "cross_keys", "cross_values"]
    assert decoder["inputs"][2]["shape"][3] == "past_length"
    assert decoder["outputs"][3] == {"name": "self_attentions", "dtype": "float32",
                                     "shape": [2, "batch", 2, "target_length", decoder["outputs"][3]["shape"][4]]}
    step = manifest["graphs"]["decoder_step"]
    assert step["top_k"] == 32
    assert [i["name"] for i in step["inputs"]] == ["target_ids", "source_mask", "past_key_0", "past_value_0",
                                                   "past_key_1", "past_value_1", "cross_key_0", "cross_value_0",
                                                   "cross_key_1", "cross_value_1"]
    assert step["inputs"][2]["shape"] == ["batch", 2, "past_length", 8]
    assert step["outputs"][0] == {"name": "top_log_probs", "dtype": "float32", "shape": ["batch", 32]}
    assert step["outputs"][1] == {"name": "top_ids", "dtype": "int64", "shape": ["batch", 32]}
    assert [o["name"] for o in step["outputs"][2:]] == ["present_key_0", "present_value_0", "present_key_1",
                                                        "present_value_1"]
    for name in names:
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == manifest["files"][name]["sha256"]
    for name in ("encoder.onnx", "decoder_step.onnx", "decoder.onnx"):
        onnx.checker.check_model(str(directory / name), full_check=True)


def test_parity_figures_are_recorded(bundle):
    parity = bundle[1]["parity"]
    assert parity["greedy_tokens_equal"]
    assert parity["max_logit_difference"] <= 1e-4
    assert parity["max_step_log_prob_difference"] <= 1e-4
    assert parity["max_attention_difference"] <= 1e-5
    assert {shape["batch"] for shape in parity["checked_shapes"]} == {1, len(SENTENCES)}


def test_onnx_translations_equal_pytorch(bundle, model_dir):
    onnx_results = Translator(bundle[0]).translate(SENTENCES, beam_size=3, max_length=8)
    torch_results = TorchTranslator(model_dir).translate(SENTENCES, beam_size=3, max_length=8)
    for ours, theirs in zip(onnx_results, torch_results):
        assert ours.token_ids == theirs.token_ids
        assert ours.score == pytest.approx(theirs.score, abs=1e-4)


@pytest.mark.parametrize("batch,source_length,steps", [(1, 1, 12), (3, 9, 4), (5, 30, 2)])
def test_graphs_accept_any_batch_source_and_cache_length(bundle, model_dir, batch, source_length, steps):
    model = Transformer.from_pretrained(model_dir)
    runtime, _, _ = OnnxBackend.from_bundle(bundle[0])
    rng = np.random.default_rng(batch)
    source_ids = rng.integers(4, model.config.vocab_size, (batch, source_length))
    source_ids[0, source_length // 2 + 1 :] = model.config.pad_id
    state = runtime.start(source_ids)
    encoded_onnx = runtime.encode(source_ids)
    past_keys = past_values = np.zeros(encoded_onnx["cross_keys"].shape[:3] + (0, 8), dtype=np.float32)
    with torch.no_grad():
        encoded = model.encode(torch.from_numpy(source_ids))
        cache = model.start_cache(encoded.memory)
        for _ in range(steps):
            target = rng.integers(4, model.config.vocab_size, (batch, 1))
            outputs = runtime.decode(target, source_ids != 0, past_keys, past_values, encoded_onnx["cross_keys"],
                                     encoded_onnx["cross_values"])
            top_log_probs, top_ids, state = runtime.step(target[:, 0], state, 6)
            reference = model.decode(torch.from_numpy(target), encoded.source_mask, cache, output_attentions=True)
            np.testing.assert_allclose(outputs["logits"], reference.logits.numpy(), atol=1e-4)
            np.testing.assert_allclose(outputs["cross_attentions"], reference.cross_attentions.numpy(), atol=1e-5)
            np.testing.assert_allclose(outputs["self_attentions"], reference.self_attentions.numpy(), atol=1e-5)
            expected = torch.log_softmax(reference.logits[:, -1], dim=-1).topk(6)
            np.testing.assert_allclose(top_log_probs, expected.values.numpy(), atol=1e-4)
            np.testing.assert_array_equal(top_ids, expected.indices.numpy())
            cache = reference.cache
            past_keys, past_values = outputs["present_self_keys"], outputs["present_self_values"]
    assert state.self_keys[0].shape[2] == past_keys.shape[3] == steps


def test_no_weight_is_stored_twice_within_a_graph(bundle):
    for name in ("encoder.onnx", "decoder_step.onnx", "decoder.onnx"):
        graph = onnx.load(str(bundle[0] / name)).graph
        digests = [hashlib.sha256(onnx.numpy_helper.to_array(t).tobytes()).hexdigest()
                   for t in graph.initializer if onnx.numpy_helper.to_array(t).size > 64]
        assert len(digests) == len(set(digests)), name


def test_an_older_bundle_format_is_refused_with_a_way_out(bundle, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(bundle[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(BundleError, match="format_version 1; this version reads 2: export the model again"):
        Translator(copy)


def test_beam_wider_than_the_step_graph_allows_is_refused(bundle):
    with pytest.raises(ValueError, match="beam_size must be an integer between 1 and 16, got 17"):
        Translator(bundle[0]).translate(SENTENCES[:1], beam_size=17)


def test_checksum_mismatch_names_the_file(bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle[0], copy)
    data = bytearray((copy / "decoder.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decoder.onnx does not match its sha256"):
        Translator(copy)
    shutil.copy(bundle[0] / "decoder.onnx", copy / "decoder.onnx")
    (copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is listed in the manifest but missing"):
        Translator(copy)
    with pytest.raises(BundleError, match="not an exported bundle"):
        Translator(tmp_path)


def test_parity_failure_fails_loudly(bundle, model_dir, tokenizer):
    model = Transformer.from_pretrained(model_dir)
    with torch.no_grad():
        model.decoder_layers[0].feed_forward.linear_out.weight.mul_(1.5)
    with pytest.raises(ParityError):
        verify_parity(model, tokenizer, bundle[0], SENTENCES)


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


@pytest.mark.parametrize("width,k", [(8000, 32), (256, 8), (64, 2), (200, 4)])  # 200: not blocks of 32, plain topk
def test_blocked_top_k_equals_torch_topk(width, k):
    from export.onnx_export import blocked_top_k

    generator = torch.Generator().manual_seed(width)
    scores = torch.randn(9, width, generator=generator).log_softmax(-1)
    values, ids = blocked_top_k(scores, k)
    expected = scores.topk(k, dim=-1)
    torch.testing.assert_close(values, expected.values, rtol=0, atol=0)
    assert torch.equal(ids, expected.indices)
    tied = torch.zeros(2, width)  # every score equal: any k ids are right, each once, values all equal
    values, ids = blocked_top_k(tied, k)
    assert (values == 0).all() and all(len(set(row.tolist())) == k for row in ids)
