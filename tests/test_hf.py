"""python -m export.hf: transformers, Optimum (its ONNX files, in its own environment) and Transformers.js (Node) load
the written folder and translate exactly as serve does, on real sentences of both shipped models; tiny models check
the conversion of both architectures, the refusals and the tokenizer.

The Optimum environment (``python -m export.optimum_env build/optimum-venv``) and the Node packages of tests/hf_js
(``npm ci``) are installed on first use, from PyPI and npm."""

import json
import shutil
import subprocess

import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install torch==2.13.0 first (the train extra)")
pytestmark = pytest.mark.torch

from conftest import CORPUS, MULTI30K, ROOT, tiny_config  # noqa: E402
from core.config import TransformerConfig  # noqa: E402
from core.data import read_lines  # noqa: E402
from core.search import max_target_length  # noqa: E402
from core.tokenizer import Tokenizer  # noqa: E402
from core.model import Transformer  # noqa: E402
from export.hf import (BLENDERBOT, MARIAN, OPTIMUM_FILES, ExportError, UnrepresentableError, architecture,  # noqa: E402
                       export_hf, generate_tokens, main)
from export.optimum_env import create  # noqa: E402
from serve import Translator  # noqa: E402

HF_JS = ROOT / "tests" / "hf_js"
SHIPPED = ["en-de", "de-en"]
SENTENCES = 24  # of test_2016_flickr per model: seconds, and long enough ones that beam 5 and greedy differ


def real_sentences(pair: str) -> list[str]:
    """The first test_2016_flickr sentences in the model's source language, and a typed </s> that must stay text."""
    if not MULTI30K.is_dir():
        pytest.skip(f"Multi30K data not found at {MULTI30K} (../shared is absent)")
    return read_lines(MULTI30K / f"test_2016_flickr.{pair[:2]}")[:SENTENCES] + ["A dog </s> runs <pad> fast."]


def with_limits(pair: str, sentences: list[str]) -> str:
    """JSON [sentence, max_new_tokens] for the scripts outside this environment: our per-source length limit."""
    config, tokenizer = TransformerConfig.load(ROOT / "models" / pair), Tokenizer.load(ROOT / "models" / pair)
    return json.dumps([[s, max_target_length(len(tokenizer.encode(s)) + 1, config)] for s in sentences])


def serve_tokens(pair: str, sentences: list[str], beam: int) -> list[list[int]]:
    translator = Translator(ROOT / "models" / pair / "onnx")
    return [t.token_ids for t in translator.translate(sentences, beam_size=beam)]


@pytest.fixture(scope="session")
def optimum_python():
    return str(create(ROOT / "build" / "optimum-venv"))


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request, tmp_path_factory, optimum_python):
    """(pair, written folder, sentences): the shipped model exported with --onnx, its verification on the sentences."""
    pair = request.param
    sentences = real_sentences(pair)
    out = tmp_path_factory.mktemp("hf") / pair
    report = export_hf(ROOT / "models" / pair, out, onnx=True, optimum_python=optimum_python, sentences=sentences)
    assert report.architecture == (BLENDERBOT if pair == "en-de" else MARIAN)
    assert set(report.equal.values()) == {len(sentences)}, report.equal
    return pair, out, sentences


def test_the_folder_has_what_the_hub_and_transformers_js_read(shipped):
    pair, out, _ = shipped
    names = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "README.md", "metrics.json"}
    assert names <= {path.name for path in out.iterdir()}
    assert {path.name for path in (out / "onnx").iterdir()} == set(OPTIMUM_FILES)
    config = json.loads((out / "config.json").read_text())
    assert config["transformers.js_config"] == {"dtype": "fp32"}
    assert (config["activation_function"], config["decoder_start_token_id"], config["forced_eos_token_id"]) == (
        "relu", 1, None)
    card = (out / "README.md").read_text()
    metrics = json.loads((ROOT / "models" / pair / "metrics.json").read_text())
    front = card.split("---\n")[1]
    assert f"language: {json.dumps(pair.split('-'))}" in front and "model-index:" in front
    for key in ("sacrebleu", "chrf", "bleu_tok_lc"):
        assert f'"value": {metrics["test_2016_flickr.beam5"][key]},' in front
    assert "Domain warning" in card and "Data licence" in card
    assert json.loads((out / "tokenizer.json").read_text())["added_tokens"] == []


def test_transformers_translates_as_serve(shipped):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    pair, out, sentences = shipped
    config = TransformerConfig.load(ROOT / "models" / pair)
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    for beam in (1, 5):
        assert generate_tokens(model, tokenizer, sentences, beam, config) == serve_tokens(pair, sentences, beam), beam


def test_a_typed_end_of_sentence_stays_text(shipped):
    from transformers import AutoTokenizer

    _, out, _ = shipped
    text = "A dog </s> runs <pad> <unk> <s>."
    ours = Tokenizer.load(out).encode(text)
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == ours + [2]
    assert 2 not in ours and 0 not in ours


def test_optimum_translates_as_serve(shipped, optimum_python):
    pair, out, sentences = shipped
    for beam in (1, 5):
        done = subprocess.run([optimum_python, str(ROOT / "tests" / "optimum_translate.py"), str(out), str(beam)],
                              input=with_limits(pair, sentences), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == serve_tokens(pair, sentences, beam), beam


@pytest.fixture(scope="module")
def node_modules():
    assert shutil.which("node") and shutil.which("npm"), "Node 20 and npm are needed for Transformers.js"
    if not (HF_JS / "node_modules" / "@huggingface" / "transformers").is_dir():
        subprocess.run(["npm", "ci", "--onnxruntime-node-install=skip", "--no-audit", "--no-fund"], cwd=HF_JS,
                       check=True, timeout=900)
    return HF_JS / "node_modules"


def test_transformers_js_translates_as_serve_greedy(shipped, node_modules):
    pair, out, sentences = shipped
    done = subprocess.run(["node", "translate.mjs", str(out)], cwd=HF_JS, input=with_limits(pair, sentences),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    translations = Translator(ROOT / "models" / pair / "onnx").translate(sentences, beam_size=1)
    assert [r["ids"] for r in results] == [t.token_ids for t in translations]
    # A dropped <unk> leaves its spaces in Transformers.js's text; serve's decode collapses them (docs/huggingface.md)
    assert [" ".join(r["text"].split()) for r in results] == [t.text for t in translations]


@pytest.fixture(scope="module", params=[False, True], ids=["post-norm", "pre-norm"])
def tiny_model(request, tmp_path_factory, tokenizer):
    directory = tmp_path_factory.mktemp("tiny") / "xx-yy"
    torch.manual_seed(0)
    Transformer(tiny_config(vocab_size=tokenizer.vocab_size, max_positions=128, pre_norm=request.param)
                ).save_pretrained(directory)
    tokenizer.save(directory)
    return directory, request.param


def test_tiny_models_of_both_architectures_convert_exactly(tiny_model, tmp_path):
    directory, pre_norm = tiny_model
    sentences = [text for pair in CORPUS for text in pair]
    report = export_hf(directory, tmp_path / "out", sentences=sentences)
    assert report.equal == {"transformers beam 1": len(sentences), "transformers beam 5": len(sentences)}
    assert report.architecture == (BLENDERBOT if pre_norm else MARIAN)
    assert report.max_log_prob_difference < 2e-5
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["architectures"] == [report.architecture]


def test_refuses_an_existing_folder_and_a_model_no_class_represents(tiny_model, tmp_path):
    tiny_model, _ = tiny_model
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportError, match="--force"):
        export_hf(tiny_model, tmp_path / "out")
    with pytest.raises(UnrepresentableError, match="special ids"):
        architecture(tiny_config(pad_id=3, unk_id=0))
    with pytest.raises(SystemExit, match="export failed: .* already exists"):
        main([str(tiny_model), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="--optimum-python"):
        main([str(tiny_model), "--out", str(tmp_path / "other"), "--onnx"])
    assert not (tmp_path / "other").exists()


def test_one_wrong_weight_aborts_before_writing(tiny_model, tmp_path, monkeypatch):
    import export.hf as hf

    tiny_model, _ = tiny_model
    convert = hf.convert

    def broken(model):
        converted = convert(model)
        with torch.no_grad():
            converted.model.decoder.layers[0].fc2.weight[0, 0] += 0.01  # one weight of thousands, by ~10% of its size
        return converted

    monkeypatch.setattr(hf, "convert", broken)
    with pytest.raises(ExportError, match="log-probabilities differ"):
        export_hf(tiny_model, tmp_path / "out", sentences=[text for pair in CORPUS for text in pair])
    assert not (tmp_path / "out").exists()
