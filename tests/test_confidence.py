"""Every translation carries a calibrated confidence: the shipped calibration (each bundle's confidence.json) labels
captions in-domain and everyday sentences, the wrong language and junk out-of-domain; the score is free (no extra
model run, same translations); HTTP and the CLI show it; a changed confidence.json is refused."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, require_multi30k
from core.bundle import load_manifest
from core.confidence import CONFIDENCE_FILE, Confidence, ConfidenceModel
from core.translator import BaseTranslator
from serve import BundleError, Translator

BUNDLES = {"en-de": ROOT / "models" / "en-de" / "onnx", "de-en": ROOT / "models" / "de-en" / "onnx"}
# Multi30K test_2016_flickr captions, and sentences of everyday life written for this test.
CAPTIONS = {
    "en": ["A man in an orange hat starring at something.",
           "A Boston Terrier is running on lush green grass in front of a white fence.",
           "A girl in karate uniform breaking a stick with a front kick.",
           "Five people wearing winter jackets and helmets stand in the snow, with snowmobiles in the background."],
    "de": ["Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
           "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun.",
           "Ein Mädchen in einem Karateanzug bricht ein Brett mit einem Tritt.",
           "Fünf Leute in Winterjacken und mit Helmen stehen im Schnee mit Schneemobilen im Hintergrund."],
}
EVERYDAY = {
    "en": ["Please send me the invoice by Friday.",
           "The government raised taxes on tobacco last year.",
           "My insurance does not cover this kind of damage."],
    "de": ["Bitte schicken Sie mir die Rechnung bis Freitag.",
           "Die Regierung hat letztes Jahr die Tabaksteuer erhöht.",
           "Meine Versicherung deckt diesen Schaden nicht ab."],
}
JUNK = ["<s></s><pad>", "asdfgh jklö qwertz", "%%% ### !!! 404"]
OTHER = {"en": "de", "de": "en"}


@pytest.fixture(scope="module")
def translators():
    return {name: Translator(bundle) for name, bundle in BUNDLES.items()}


@pytest.mark.parametrize("direction", BUNDLES)
def test_captions_are_in_domain_and_the_rest_is_not(translators, direction):
    translator = translators[direction]
    source = translator.source_lang
    out_of_domain = EVERYDAY[source] + [CAPTIONS[OTHER[source]][0]] + JUNK  # everyday, the wrong language, junk
    results = translator.translate(CAPTIONS[source] + out_of_domain)
    labels = [result.confidence.label for result in results]
    assert labels == ["in_domain"] * len(CAPTIONS[source]) + ["out_of_domain"] * len(out_of_domain), \
        [(r.source, round(r.confidence.score, 3)) for r in results]
    for result in results:
        assert isinstance(result.confidence, Confidence) and 0 <= result.confidence.score <= 1
        threshold = translator.confidence.threshold
        assert (result.confidence.score >= threshold) == (result.confidence.label == "in_domain")
    assert results[0].confidence.message == "looks like the training data"
    assert results[-1].confidence.message == "outside what this model knows: treat with care"


@pytest.mark.parametrize("direction", BUNDLES)
def test_held_out_captions_are_mostly_in_domain(translators, direction):
    translator = translators[direction]
    captions = (require_multi30k() / f"test_2016_flickr.{translator.source_lang}").read_text("utf-8").splitlines()
    flagged = [r.confidence.label == "out_of_domain" for r in translator.translate(captions[:200])]
    assert sum(flagged) / len(flagged) <= 0.15


def test_the_score_is_free_and_changes_no_translation(translators):
    translator = translators["en-de"]
    plain = BaseTranslator(translator.backend, translator.tokenizer)  # the same graphs, no confidence
    texts = CAPTIONS["en"] + EVERYDAY["en"] + JUNK
    for beam_size in (1, 5):
        scored, unscored = translator.translate(texts, beam_size=beam_size), plain.translate(texts, beam_size=beam_size)
        assert [r.hypotheses for r in scored] == [r.hypotheses for r in unscored]
        assert all(r.confidence is None for r in unscored) and all(r.confidence for r in scored)


def test_hypotheses_carry_their_token_log_probabilities(translators):
    for beam_size in (1, 5):
        for result in translators["de-en"].translate(CAPTIONS["de"] + JUNK, beam_size=beam_size, n_best=beam_size):
            for hypothesis in result.hypotheses:
                assert len(hypothesis.token_log_probs) == len(hypothesis.token_ids) + hypothesis.finished
                assert sum(hypothesis.token_log_probs) == hypothesis.log_prob
                assert all(p <= 0 for p in hypothesis.token_log_probs)


def test_an_empty_text_has_no_confidence(translators):
    assert [result.confidence for result in translators["en-de"].translate(["", " "])] == [None, None]


def test_the_calibration_file_is_listed_and_a_changed_one_is_refused(tmp_path):
    for bundle in BUNDLES.values():
        assert CONFIDENCE_FILE in load_manifest(bundle)["files"]
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES["en-de"], bundle)
    spec = json.loads((bundle / CONFIDENCE_FILE).read_text("utf-8"))
    spec["threshold"] = 0.0  # everything in-domain
    (bundle / CONFIDENCE_FILE).write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(BundleError, match="confidence.json does not match its sha256"):
        Translator(bundle)


def test_a_bundle_without_calibration_translates_with_no_confidence(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES["en-de"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text("utf-8"))
    del manifest["files"][CONFIDENCE_FILE]
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (bundle / CONFIDENCE_FILE).unlink()
    translator = Translator(bundle, workers=1)
    assert translator.confidence is None and translator.translate(["A dog runs."])[0].confidence is None
    done = run_cli("translate", "--model", str(bundle), "--confidence", stdin="A dog runs.\n")
    assert done.returncode == 1 and "is not calibrated" in done.stderr and done.stderr.count("\n") == 1


def test_a_confidence_file_of_unknown_features_is_refused():
    spec = json.loads((BUNDLES["en-de"] / CONFIDENCE_FILE).read_text("utf-8"))
    with pytest.raises(ValueError, match="unknown confidence features"):
        ConfidenceModel.from_dict({**spec, "features": ["perplexity_of_the_moon"] * len(spec["features"])})


def run_cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "serve", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_appends_score_and_label(translators):
    lines = [CAPTIONS["en"][0], "", EVERYDAY["en"][0]]
    done = run_cli("translate", "--model", str(BUNDLES["en-de"]), "--confidence", stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    expected = translators["en-de"].translate(lines)
    rows = [line.split("\t") for line in done.stdout.split("\n")[:-1]]
    assert rows[1] == [""]  # an empty line stays empty
    for row, result in zip([rows[0], rows[2]], [expected[0], expected[2]]):
        assert row == [result.text, f"{result.confidence.score:.3f}", result.confidence.label]
    assert [rows[0][2], rows[2][2]] == ["in_domain", "out_of_domain"]


def test_http_items_carry_score_and_label(translators):
    from fastapi.testclient import TestClient

    from serve.api import create_app

    with TestClient(create_app(lambda: list(translators.values()))) as client:
        body = {"inputs": [CAPTIONS["de"][1], EVERYDAY["de"][0], ""],
                "parameters": {"src_lang": "de", "tgt_lang": "en"}}
        items = client.post("/translate", json=body).json()
    expected = translators["de-en"].translate(body["inputs"])
    for item, result in zip(items[:2], expected):
        assert item["confidence"] == {"score": pytest.approx(result.confidence.score),
                                      "label": result.confidence.label}
    assert [item["confidence"]["label"] for item in items[:2]] == ["in_domain", "out_of_domain"]
    assert "confidence" not in items[2]  # an empty input: nothing to judge

