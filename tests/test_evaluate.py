import json

import pytest

pytest.importorskip("sacrebleu", reason="scoring needs sacrebleu and sacremoses (the train extra)")

from conftest import ROOT, require_multi30k  # noqa: E402
from core.evaluate import main as evaluate_main
from core.evaluate import score, tokenize_lowercase


def test_tokenize_lowercase_matches_the_published_reference_format():
    assert tokenize_lowercase(["A man's dog runs, doesn't it?"], "en") == ["a man &apos;s dog runs , doesn &apos;t it ?"]
    assert tokenize_lowercase(["Ein „Hund“ läuft über 9,5 km."], "de")[0].startswith("ein &quot; hund &quot; läuft")


def test_tokenized_lowercased_bleu_is_scored_without_retokenizing():
    hypotheses = ["ein Mann mit einem orangefarbenen Hut starrt auf etwas."]
    references = ["Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."]
    tokenized = ["ein mann mit einem orangefarbenen hut starrt auf etwas ."]
    result = score(hypotheses, references, tokenized, lang="de")
    assert result["bleu_tok_lc"] == 100.0  # same after Moses tokenization and lowercasing
    assert result["sacrebleu"] < 50  # cased, detokenized BLEU against the raw reference is a different score
    assert result["sacrebleu_signature"].startswith("nrefs:1|case:mixed")
    assert 0 < result["chrf"] < 100
    assert "bleu_tok_lc" not in score(hypotheses, references)


def test_score_checks_lengths():
    with pytest.raises(ValueError, match="references"):
        score(["a"], ["a", "b"])


SHIPPED_MODEL = ROOT / "models" / "en-de"


@pytest.mark.torch
@pytest.mark.skipif(not (SHIPPED_MODEL / "model.safetensors").is_file(), reason="no shipped models/en-de")
def test_shipped_en_de_model_meets_its_quality_floor(capsys):
    data = require_multi30k()
    evaluate_main(["--model", str(SHIPPED_MODEL), "--src", str(data / "test_2016_flickr.en"),
                   "--ref", str(data / "test_2016_flickr.de"),
                   "--ref-tok", str(data / "tok" / "test_2016_flickr.lc.norm.tok.de"), "--beam", "5"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bleu_tok_lc"] >= 40.0, result
