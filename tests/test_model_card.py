"""export.model_card: the Hub card of a captions-only model and of one also trained on the Ding dictionary."""

import json

import pytest

pytest.importorskip("torch", reason="the export package needs torch: pip install torch==2.13.0 first")
pytestmark = pytest.mark.torch

from conftest import ROOT  # noqa: E402
from core.config import TransformerConfig  # noqa: E402
from export.model_card import GENERAL_NAME, model_card  # noqa: E402

LANGUAGES = {"source": "en", "target": "de"}


def card(metrics: dict) -> tuple[str, str]:
    text = model_card("en-de", "BlenderbotForConditionalGeneration", TransformerConfig.load(ROOT / "models" / "en-de"),
                      LANGUAGES, metrics)
    return text.split("---\n")[1], text


def test_a_captions_only_model_is_mit_and_warns_of_its_domain():
    metrics = json.loads((ROOT / "models" / "en-de" / "metrics.json").read_text(encoding="utf-8"))
    metrics = {key: value for key, value in metrics.items() if not key.startswith("ding_test")}
    front, text = card(metrics)
    assert 'license: "mit"' in front and "ding" not in front
    assert "trained only on Multi30K" in text and "MIT-licensed" in text and "GPL" not in text


def test_a_model_trained_on_the_dictionary_gives_its_general_scores_and_the_gpl():
    metrics = json.loads((ROOT / "models" / "en-de" / "metrics.json").read_text(encoding="utf-8"))
    metrics["ding_test.beam5"] = {"sacrebleu": 4.42, "chrf": 24.03, "sentences": 624, "sacrebleu_signature": "sig"}
    front, text = card(metrics)
    assert 'license: "gpl-2.0"' in front
    index = json.loads(front.split("model-index: ", 1)[1].splitlines()[0])
    general = [r for r in index[0]["results"] if r["dataset"]["type"] == "ding"]
    assert [m["value"] for m in general[0]["metrics"]] == [4.42, 24.03] and general[0]["dataset"]["name"] == GENERAL_NAME
    assert "sacreBLEU 4.42, chrF 24.03" in text and "624 sentences" in text
    assert "GPL-2.0-or-later" in text and "trained only on Multi30K" not in text
