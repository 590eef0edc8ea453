"""python -m export.from_hf: a random MarianMTModel (swish, a non-zero final_logits_bias, <pad> as decoder start,
opus-mt's generation config) imported exactly: our search's greedy and beam-4 tokens equal transformers' generate,
in torch and, through the ONNX bundle, in serve; what cannot be represented is refused with the reason."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="needs transformers (the hf extra)")
pytest.importorskip("sentencepiece", reason="needs sentencepiece (the hf extra)")
pytestmark = pytest.mark.torch

from core.decoding import TorchTranslator  # noqa: E402
from core.search import SearchRules, translate  # noqa: E402
from export.from_hf import (ExportError, UnrepresentableError, generate_tokens, import_marian,  # noqa: E402
                            load_source, main)
from marian import CORPUS_DE, CORPUS_EN, LANGUAGE_TOKEN, write_marian_tokenizer, write_random_marian  # noqa: E402

SENTENCES = CORPUS_EN + ["A", "Two dogs", "The man and the woman walk along the beach with a dog.",
                         f"{LANGUAGE_TOKEN} A dog runs.", "Ein Hund ☃☃ läuft."]
# EOS often first (empty outputs), else late or at the limit; <pad> among the best: every rule below matters
RANDOM_MODEL = dict(eos_bias=2.0, bias_std=0.5, init_std=0.5, embedding_scale=0.5)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("opus-mt-tiny")
    vocab = write_marian_tokenizer(folder, CORPUS_EN * 3, CORPUS_DE * 3)
    write_random_marian(folder, vocab, **RANDOM_MODEL)
    (folder / "README.md").write_text("---\nlanguage: [en, de]\nlicense: cc-by-4.0\n---\n# opus-mt-tiny\n")
    return folder


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "opus-mt-tiny"
    report = import_marian(str(source), out, sentences=SENTENCES, beams=(1, 4))
    return out, report


def test_greedy_and_beam_4_equal_generate(imported):
    out, report = imported
    assert report.equal == {"greedy": len(SENTENCES), "beam 4": len(SENTENCES)}
    assert report.max_logit_difference < 1e-4


def test_every_search_rule_is_needed_for_the_same_tokens(source, imported):
    """The random model exercises each rule: without it, some tokens differ from generate (so the test can fail)."""
    out, _ = imported
    hf_model, hf_tokenizer, _ = load_source(str(source))
    translator = TorchTranslator(out)
    rules = translator.rules
    assert rules == SearchRules(max_length_a=0, max_length_b=15, banned_ids=(translator.config.pad_id,),
                                forced_eos=True, early_stopping=False, float32_scores=True)
    lengths = set()
    for beam in (1, 4):
        theirs = generate_tokens(hf_model, hf_tokenizer, SENTENCES, beam, translator.config.eos_id)
        lengths |= {len(tokens) for tokens in theirs}
        ours = [t.token_ids for t in translator.translate(SENTENCES, beam_size=beam, batch_size=1)]
        assert ours == theirs
        changes = [replace(rules, forced_eos=False), SearchRules()]
        if beam > 1:  # greedy never ranks <pad> first here, and its end rule is the same either way
            changes += [replace(rules, banned_ids=()), replace(rules, early_stopping=True)]
        for changed in changes:
            other = [t.token_ids for t in translate(translator.backend, translator.tokenizer, SENTENCES,
                                                    beam_size=beam, rules=changed, batch_size=1)]
            assert other != theirs, changed
    assert len(lengths) > 3  # sentences end at different lengths, some at the limit


def test_the_folder_says_where_the_weights_come_from(imported, source):
    out, _ = imported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "metrics.json", "model.safetensors",
                                                     "search.json", "tokenizer.json"]
    readme = (out / "README.md").read_text()
    assert "cc-by-4.0" in readme and str(source) in readme
    metrics = json.loads((out / "metrics.json").read_text())["imported"]
    assert metrics["license"] == "cc-by-4.0" and metrics["languages"] == {"source": "en", "target": "de"}
    config = json.loads((out / "config.json").read_text())
    assert (config["activation"], config["final_logits_bias"], config["bos_id"]) == ("swish", True, config["pad_id"])


def test_an_existing_folder_is_kept_without_force(imported, source, capsys):
    out, _ = imported
    with pytest.raises(SystemExit, match="already exists; pass --force"):
        main([str(source), "--out", str(out)])


@pytest.mark.parametrize("change, reason", [
    (dict(scale_embedding=False), "embeddings are not scaled"),
    (dict(activation_function="gelu"), "activation 'gelu'"),
])
def test_what_cannot_be_represented_is_refused(source, tmp_path, change, reason):
    folder = tmp_path / "source"
    folder.mkdir()
    vocab = json.loads((source / "vocab.json").read_text())
    for name in ("source.spm", "target.spm", "vocab.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    write_random_marian(folder, vocab, **RANDOM_MODEL, **change)
    with pytest.raises(UnrepresentableError, match=reason):
        import_marian(str(folder), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_separate_vocabularies_are_refused(source, tmp_path):
    folder = tmp_path / "source"
    folder.mkdir()
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "target_vocab.json").write_text((source / "vocab.json").read_text())
    with pytest.raises(UnrepresentableError, match="separate source and target vocabularies"):
        import_marian(str(folder), tmp_path / "out")


def test_generation_settings_it_does_not_implement_are_refused(source, tmp_path):
    from transformers import GenerationConfig

    folder = tmp_path / "source"
    folder.mkdir()
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    settings = json.loads((source / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps(
        {**settings, "no_repeat_ngram_size": 3, "bad_words_ids": [[5, 6]]}))
    assert GenerationConfig.from_pretrained(folder).no_repeat_ngram_size == 3
    with pytest.raises(UnrepresentableError, match=r"no_repeat_ngram_size=3.*bad_words_ids entry \[5, 6\]"):
        import_marian(str(folder), tmp_path / "out")


def test_a_folder_that_is_not_marian_is_refused(tmp_path):
    with pytest.raises(ExportError, match="is not a folder"):
        import_marian(str(tmp_path / "nowhere"), tmp_path / "out")


@pytest.mark.skipif(not os.environ.get("OPUS_MT_DIR"), reason="set OPUS_MT_DIR to a local opus-mt folder (e.g. a "
                    "download of Helsinki-NLP/opus-mt-en-de) to import a real model")
def test_a_real_opus_mt_model_imports_exactly(tmp_path):
    source = Path(os.environ["OPUS_MT_DIR"])
    report = import_marian(str(source), tmp_path / "opus-mt", beams=(1, 4))
    assert set(report.equal.values()) == {report.sentences}


@pytest.fixture(scope="module")
def bundle(imported):
    """python -m export on the imported folder: the ONNX bundle."""
    from export.onnx_export import export_bundle

    out, _ = imported
    manifest = export_bundle(out, source_lang="en", target_lang="de")
    assert SearchRules.from_dict(manifest["search"]) == SearchRules.load(out)  # the model's rules travel with it
    return out / "onnx"


@pytest.fixture(scope="module")
def expected(source):
    hf_model, hf_tokenizer, _ = load_source(str(source))
    return {beam: generate_tokens(hf_model, hf_tokenizer, SENTENCES, beam, hf_model.config.eos_token_id)
            for beam in (1, 4)}


def test_serve_translates_the_bundle_with_generates_tokens(bundle, expected):
    from serve import Translator

    translator = Translator(bundle)
    for beam, tokens in expected.items():
        results = translator.translate(SENTENCES, beam_size=beam)
        assert [r.token_ids for r in results] == tokens
        assert [r.text for r in results] == [translator.tokenizer.decode(t) for t in tokens]
    (result,) = translator.translate(SENTENCES[:1], beam_size=4, return_attention=True)
    assert result.attention.decoder_input_tokens[0] == "<pad>"  # Marian's decoder starts from <pad>
    assert Translator(bundle, precision="int8").translate(SENTENCES[:2], beam_size=4)  # runs; int8 is approximate
    from serve.policy import beam_nodes, search_cost

    # the cost bounded before work uses the model's own length rule: a fixed limit of 15 tokens
    assert search_cost(translator, 3, 4, None) == 4 * (4 + 15) and beam_nodes(translator, 100, 4, None) == 2 * 4 * 15


def test_cli_and_http_give_the_same_tokens(bundle, expected):
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    from serve import Translator
    from serve.api import create_app

    translator = Translator(bundle)
    texts = [translator.tokenizer.decode(tokens) for tokens in expected[4]]
    done = subprocess.run([sys.executable, "-m", "serve", "translate", "--model", str(bundle), "--beam", "4"],
                          input="\n".join(SENTENCES) + "\n", capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == texts
    with TestClient(create_app(lambda: [translator])) as client:
        response = client.post("/translate", json={"inputs": SENTENCES, "parameters": {
            "src_lang": "en", "tgt_lang": "de", "generate_parameters": {"num_beams": 4}}})
    assert response.status_code == 200, response.text
    assert [item["translation_text"] for item in response.json()] == texts


def test_every_view_of_the_demo_opens_on_an_imported_model(bundle):
    from demo import handlers, heads
    from demo import inside as look

    directions = handlers.load_directions([bundle])
    (direction,) = directions
    text = SENTENCES[1]
    result = handlers.translate_text(directions, direction, text, beam_size=4)
    assert result.attention.decoder_input_tokens[0] == "<pad>"
    assert "&lt;pad&gt;" in look.beam_tree_view(directions, result)  # the tree's root is the decoder's start
    for kind in ("encoder", "decoder", "cross"):
        assert handlers.attention_views(result, kind, 1, handlers.MEAN)
    cell, _ = heads.open_cell(directions, result, "cross", 1, 1, 1, 1)
    assert cell
    assert heads.heads_off_view(directions, result, ["cross.0.0"])
    choices = look.candidate_choices(directions, result, 1)
    found = look.what_if(directions, result, 1, look.first_alternative(result, 1, choices), "", "1", "1")
    assert found.result.attention.target_tokens
    first, second = look.compare(directions, direction, SENTENCES[0], SENTENCES[2], 4)
    assert first.text is not None and second.text is not None
