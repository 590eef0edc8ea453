"""serve.sentences: a paragraph translated sentence by sentence, the same in the Python API, the command line, the
HTTP API and the demo (tests/test_demo.py); one segmenter (sentencex) written in one place."""

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from conftest import ROOT
from serve import Translator
from serve.api import create_app
from serve.sentences import split_sentences, split_texts, translate_paragraphs

EN_DE = ROOT / "models" / "en-de" / "onnx"
FIVE_CAPTIONS = ("Two young children are playing with a red ball on the grass. A man in a blue jacket is riding his "
                 "bicycle down a busy street. A woman with sunglasses sits on a bench in the park. Three men are "
                 "working on a construction site next to the road. A brown dog jumps over a log in the forest.")


@pytest.fixture(scope="module")
def translator():
    return Translator(EN_DE)


@pytest.fixture(scope="module")
def sentences(translator):
    found = split_sentences(FIVE_CAPTIONS, "en")
    return found, [t.text for t in translator.translate(found, beam_size=5)]


@pytest.mark.parametrize("language, text, expected", [
    ("en", "Dr. Smith sees a dog. Mr. Brown runs, e.g. in the park! Does he? Yes.",
     ["Dr. Smith sees a dog.", "Mr. Brown runs, e.g. in the park!", "Does he?", "Yes."]),
    ("de", "Ein Hund läuft, z.B. im Park. Zwei Männer arbeiten am 3. Mai. Gut.",
     ["Ein Hund läuft, z.B. im Park.", "Zwei Männer arbeiten am 3. Mai.", "Gut."]),
    ("en", "First line\n\nSecond line", ["First line", "Second line"]),  # a paragraph break ends a sentence
    ("en", "no boundary at all", ["no boundary at all"]),
    ("en", " \n\t ", []),
    (None, "A dog. A cat.", ["A dog.", "A cat."]),
])
def test_the_segmenter(language, text, expected):
    assert split_sentences(text, language) == expected


def test_split_texts_keeps_one_entry_for_a_blank_text():
    assert split_texts(["A dog. A cat.", "", "One."], "en") == (["A dog.", "A cat.", "", "One."], [2, 1, 1])


def test_python_api_five_captions_come_back_as_five_sentences(translator, sentences):
    found, expected = sentences
    assert len(found) == 5
    (whole,) = translator.translate([FIVE_CAPTIONS], beam_size=5)
    assert whole.text.count(".") < 5  # the paragraph at once loses sentences
    joined, empty, one = translate_paragraphs(translator, [FIVE_CAPTIONS, "", "A dog runs."], beam_size=5)
    assert joined.text == " ".join(expected) and joined.text.count(".") == 5 and joined.source == FIVE_CAPTIONS
    parts = translator.translate(found, beam_size=5)
    assert joined.confidence.score == pytest.approx(min(p.confidence.score for p in parts))
    assert joined.score == pytest.approx(sum(p.score for p in parts) / 5)
    assert joined.tokens == [token for p in parts for token in p.tokens]
    assert empty.text == "" and one.text == translator.translate(["A dog runs."], beam_size=5)[0].text
    for option in (dict(return_attention=True), dict(n_best=2), dict(target_prefix=["Ein"]),
                   dict(record_beams=True)):
        with pytest.raises(ValueError, match="an option of single sentences"):
            translate_paragraphs(translator, ["A dog."], **option)


def test_command_line_split_sentences(translator, sentences):
    found, expected = sentences
    done = subprocess.run([sys.executable, "-m", "serve", "translate", "--model", str(EN_DE), "--split-sentences"],
                          input=f"{FIVE_CAPTIONS}\n\nA dog runs.\n", capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == [" ".join(expected), "", translator.translate(["A dog runs."])[0].text, ""]
    done = subprocess.run([sys.executable, "-m", "serve", "translate", "--model", str(EN_DE)],
                          input=f"{FIVE_CAPTIONS}\n", capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.count(".") < 5  # the default: a line is one search


def test_http_split_sentences_is_an_option_off_by_default(translator, sentences):
    found, expected = sentences
    with TestClient(create_app(lambda: [translator])) as client:
        default = client.post("/translate", json={"inputs": FIVE_CAPTIONS})
        assert default.status_code == 200 and default.json()[0]["translation_text"].count(".") < 5
        split = client.post("/translate", json={"inputs": [FIVE_CAPTIONS, "", "A dog runs."],
                                                "parameters": {"split_sentences": True, "return_scores": True,
                                                               "truncation": "longest_first"}})
        assert split.status_code == 200, split.text
        body = split.json()
        assert [item["translation_text"] for item in body] == [
            " ".join(expected), "", translator.translate(["A dog runs."])[0].text]
        assert [item["truncated"] for item in body] == [False, False, False]
        assert body[0]["confidence"]["score"] == pytest.approx(min(
            t.confidence.score for t in translator.translate(found, beam_size=5)))
        cut = client.post("/translate", json={"inputs": "A dog runs. " * 200, "parameters": {
            "split_sentences": True, "truncation": "longest_first"}})
        assert cut.status_code == 200 and cut.json()[0]["truncated"] is True
        assert cut.json()[0]["translation_text"].count(".") > 100  # every sentence of the first 2,000 characters
        refused = client.post("/translate", json={"inputs": "A dog.", "parameters": {"split_sentences": True,
                                                                                      "return_attention": True}})
        assert refused.status_code == 422 and refused.json()["field"] == "parameters.split_sentences"
        assert "return_attention" in refused.json()["error"]
        too_long = client.post("/translate", json={"inputs": "A dog runs. " * 200,
                                                   "parameters": {"split_sentences": True}})
        assert too_long.status_code == 422 and too_long.json()["field"] == "inputs"
