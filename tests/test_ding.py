"""core.ding on lines written in the dictionary's format (the GPL dictionary itself is never read by the tests)."""

from core.ding import SPLITS, build, clean, kind_of, main, split_of

LINES = [
    "# Version :: devel 2023-01-30\n",
    "Abend {m} [geh.] | Abende {pl} | Wollen wir zusammen zu Abend essen? :: evening | evenings | Would you like to "
    "have dinner with me?\n",
    "Hund {m}; Köter {m} [ugs.] | Der Hund (Canis) bellt laut. :: dog; hound | The dog barks loudly.\n",
    "etw. abbauen | Ich warte lieber bis morgen. :: to dismantle sth. | I prefer to wait until tomorrow.\n",
    "nur links :: only left | one too many\n",  # alternatives that do not align
    "Nein. :: No.\n",  # too short for a sentence
    "Hund {m}; Köter {m} [ugs.] | Der Hund (Canis) bellt laut. :: dog; hound | The dog barks loudly.\n",  # again
    "Ambulanz {f} /AMB/ <Ambulanz> :: outpatient clinic /OPC/\n",
    "Er hat jdm. etw. gegeben. :: He gave sb. sth.\n",
]


def test_markup_is_removed_and_the_first_synonym_kept():
    assert clean("Hund {m}; Köter {m} [ugs.]") == "Hund"
    assert clean("Der Hund (Canis) bellt laut.") == "Der Hund bellt laut."
    assert clean("Ambulanz {f} /AMB/ <Ambulanz>") == "Ambulanz"
    assert kind_of("Ich warte lieber bis morgen.", "I prefer to wait until tomorrow.") == "sentence"
    assert kind_of("Er hat jdm. etw. gegeben.", "He gave sb. sth.") == "placeholder (sb./sth./etw.)"
    assert kind_of("Nein.", "No.") == "sentence of fewer than three words"
    assert kind_of("Abende", "evenings") == "phrase"


def test_sentences_phrases_and_what_was_dropped():
    corpus = build(LINES, phrases=True)
    sentences = sorted(pair for name in SPLITS for pair in corpus.splits[name])
    assert sentences == [("Der Hund bellt laut.", "The dog barks loudly."),
                         ("Ich warte lieber bis morgen.", "I prefer to wait until tomorrow."),
                         ("Wollen wir zusammen zu Abend essen?", "Would you like to have dinner with me?")]
    assert ("Hund", "dog") in corpus.phrases and ("Ambulanz", "outpatient clinic") in corpus.phrases
    assert not any("etw." in german or "sth." in english for german, english in corpus.phrases)
    assert corpus.dropped["not an entry, or alternatives that do not align"] == 1  # the comment line is not counted
    assert corpus.dropped["duplicate"] == 2 and corpus.dropped["sentence of fewer than three words"] == 1
    without = build(LINES)
    assert without.phrases == [] and without.dropped["phrase (--phrases keeps them)"] == len(corpus.phrases)


def test_the_split_is_fixed_and_never_shares_a_sentence():
    german = [f"Satz Nummer {i} ist hier." for i in range(3000)]
    corpus = build([f"{text} :: Sentence number {i} is here.\n" for i, text in enumerate(german)])
    counts = {name: len(pairs) for name, pairs in corpus.splits.items()}
    assert sum(counts.values()) == 3000 and 60 <= counts["val"] <= 140 and 60 <= counts["test"] <= 140
    for name in SPLITS:
        assert all(split_of(pair[0]) == name for pair in corpus.splits[name])  # the same sentence, the same split
    assert split_of("Satz Nummer 7 ist hier.") == split_of("SATZ NUMMER 7 IST HIER.")


def test_command_writes_aligned_files_and_reports(tmp_path, capsys):
    source = tmp_path / "de-en"
    source.write_text("".join(LINES), encoding="utf-8")
    main(["--source", str(source), "--out", str(tmp_path / "out"), "--phrases"])
    report = capsys.readouterr().out
    assert report.startswith(f"wrote {tmp_path / 'out'}: train ") and "dropped 2: duplicate" in report
    for name in (*SPLITS, "phrases"):
        german = (tmp_path / "out" / f"{name}.de").read_text(encoding="utf-8").splitlines()
        english = (tmp_path / "out" / f"{name}.en").read_text(encoding="utf-8").splitlines()
        assert len(german) == len(english)
