"""core.mix: the general-domain training mix, on tiny files."""

import pytest

from core.data import DataError
from core.mix import DING_COPIES, main, training_pairs

MULTI30K = {"en": ["a dog runs.", "two men sit."], "de": ["ein hund rennt.", "zwei männer sitzen."]}
DISTILLED = {"de": ["ein hund läuft.", "zwei männer sitzen da."], "en": ["a dog is running.", "two men are sitting."]}
DING = {"en": ["I prefer to wait until tomorrow."], "de": ["Ich warte lieber bis morgen."]}
PHRASES = {"en": [f"word {i}" for i in range(10)], "de": [f"wort {i}" for i in range(10)]}


def test_each_direction_gets_real_distilled_back_translated_ding_and_phrase_pairs():
    sources, targets = training_pairs(MULTI30K, DISTILLED, DING, PHRASES, "en", "de", phrase_count=3)
    assert len(sources) == len(targets) == 2 * 3 + DING_COPIES + 3
    pairs = list(zip(sources, targets))
    assert pairs[:2] == list(zip(MULTI30K["en"], MULTI30K["de"]))  # real
    assert pairs[2:4] == list(zip(MULTI30K["en"], DISTILLED["de"]))  # distilled: this direction's translations
    assert pairs[4:6] == list(zip(DISTILLED["en"], MULTI30K["de"]))  # back-translated sources, real targets
    assert pairs[6:6 + DING_COPIES] == [(DING["en"][0], DING["de"][0])] * DING_COPIES
    phrases = pairs[6 + DING_COPIES:]
    assert all(en.replace("word", "wort") == de for en, de in phrases) and len(set(phrases)) == 3
    again = training_pairs(MULTI30K, DISTILLED, DING, PHRASES, "de", "en", phrase_count=3)
    assert [p for p in zip(*again)][6 + DING_COPIES:] == [(de, en) for en, de in phrases]  # one draw for both


def test_translations_that_do_not_line_up_are_refused():
    with pytest.raises(DataError, match="one line per pair"):
        training_pairs(MULTI30K, {"de": DISTILLED["de"][:1], "en": DISTILLED["en"]}, DING, PHRASES, "en", "de")


def test_cli_writes_both_directions_and_the_mixed_val(tmp_path, capsys):
    multi30k, ding = tmp_path / "multi30k", tmp_path / "ding"
    for folder, files in ((multi30k, {"train": MULTI30K, "val": MULTI30K}), (ding, {"train": DING, "val": DING,
                                                                                   "phrases": PHRASES})):
        folder.mkdir()
        for name, sides in files.items():
            for lang, lines in sides.items():
                (folder / f"{name}.{lang}").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    for lang, lines in DISTILLED.items():
        (tmp_path / f"distilled.{lang}").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    out = tmp_path / "mix"
    main(["--multi30k", str(multi30k), "--ding", str(ding), "--distilled-de", str(tmp_path / "distilled.de"),
          "--distilled-en", str(tmp_path / "distilled.en"), "--out", str(out)])
    assert (out / "de-en.de").read_text(encoding="utf-8").splitlines()[:2] == MULTI30K["de"]
    assert (out / "val.en").read_text(encoding="utf-8").splitlines() == MULTI30K["en"] + DING["en"]
    assert "en-de: 20 pairs" in capsys.readouterr().out  # 2 x 3 + 4 Ding copies + all 10 phrases
    with pytest.raises(SystemExit, match="no such file"):
        main(["--multi30k", str(tmp_path / "missing"), "--ding", str(ding), "--distilled-de", "x", "--distilled-en",
              "y", "--out", str(out)])
