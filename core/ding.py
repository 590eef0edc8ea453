"""A general German–English corpus from the Ding dictionary (Debian's ``trans-de-en``): sentence pairs, and
optionally short phrase pairs, split into train/val/test once and for all.

    python -m core.ding --fetch --out build/ding              # apt-get download trans-de-en, extract, build
    python -m core.ding --source /usr/share/trans/de-en --out build/ding --phrases

The dictionary (GPL-2+, https://dict.tu-chemnitz.de/) is never committed: ``--fetch`` downloads the Debian package
into a temporary folder and reads ``usr/share/trans/de-en`` from it, or ``--source`` names the installed file. Each
line is ``German alternatives :: English alternatives``, the alternatives separated by ``|`` and aligned by position
(a word, its plural, then example phrases and sentences). Markup is removed: ``{f}`` (grammar), ``[geh.]`` (register,
field), ``<purer>`` (other spellings), ``(…)`` (explanations), ``/AHU/`` (abbreviations); ``;`` separates synonyms,
of which the first is kept. A pair whose sides both end in ``.``, ``!`` or ``?`` and have at least three words is a
sentence; with ``--phrases``, a pair of at most four words a side that is no sentence and has no placeholder
(``sb.``, ``sth.``, ``jdn.``, ``etw.``, …) is a phrase (train only). Exact duplicates are dropped.

The split is fixed by the German sentence's SHA-256 (1 in 30 to test, 1 in 30 to val, the rest to train), so the same
sentence always lands in the same split and a German sentence is never in two; a val or test pair whose English side
also occurs in train is dropped. Writes ``{train,val,test}.{de,en}`` (and ``phrases.{de,en}``) and prints the counts
and what was dropped, and why.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
BUCKETS = 30  # of every 30 German sentences (by hash), one goes to test and one to val
MARKUP = re.compile(r"\{[^}]*\}|\[[^\]]*\]|<[^>]*>|\([^)]*\)|/[^/\s][^/]*/")
PLACEHOLDER = re.compile(r"\b(sb|sth|so|jdn|jdm|jds|jd|etw)\.", re.IGNORECASE)
SENTENCE_END = (".", "!", "?")
LEFTOVER = re.compile(r"[{}\[\]<>()/;|]")


@dataclass
class Corpus:
    """The built pairs of each split, the phrase pairs, and the count of each reason a candidate was dropped."""

    splits: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {name: [] for name in SPLITS})
    phrases: list[tuple[str, str]] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def clean(text: str) -> str:
    """One alternative without the dictionary's markup: the first synonym, brackets removed, spaces collapsed."""
    first = text.split(";")[0]
    without = MARKUP.sub(" ", first)
    return re.sub(r"\s+", " ", without).strip().replace(" ,", ",").replace(" .", ".")


def alternatives(line: str) -> list[tuple[str, str]] | None:
    """The aligned (German, English) alternatives of one dictionary line; None when the line is not an entry or its
    two sides have different numbers of alternatives."""
    if line.startswith("#") or " :: " not in line:
        return None
    german, english = line.rstrip("\n").split(" :: ", 1)
    german_parts, english_parts = german.split(" | "), english.split(" | ")
    if len(german_parts) != len(english_parts):
        return None
    return list(zip(german_parts, english_parts))


def kind_of(german: str, english: str) -> str:
    """"sentence", "phrase" or the reason the pair is neither."""
    if not german or not english:
        return "empty after removing markup"
    if LEFTOVER.search(german) or LEFTOVER.search(english):
        return "markup left after cleaning"
    sentence = german.endswith(SENTENCE_END) and english.endswith(SENTENCE_END)
    if sentence:
        if len(german.split()) < 3 or len(english.split()) < 3:
            return "sentence of fewer than three words"
        if PLACEHOLDER.search(german) or PLACEHOLDER.search(english):
            return "placeholder (sb./sth./etw.)"
        return "sentence"
    if PLACEHOLDER.search(german) or PLACEHOLDER.search(english):
        return "placeholder (sb./sth./etw.)"
    if len(german.split()) <= 4 and len(english.split()) <= 4:
        return "phrase"
    return "longer than a phrase, not a sentence"


def split_of(german: str) -> str:
    """The fixed split of a German sentence (its lowercased text's SHA-256)."""
    bucket = int(hashlib.sha256(german.lower().encode("utf-8")).hexdigest(), 16) % BUCKETS
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def build(lines: Iterable[str], *, phrases: bool = False) -> Corpus:
    """The corpus of these dictionary lines."""
    corpus = Corpus()
    seen: set[tuple[str, str]] = set()
    for line in lines:
        pairs = alternatives(line)
        if pairs is None:
            corpus.dropped["not an entry, or alternatives that do not align"] += not line.startswith("#")
            continue
        for raw_german, raw_english in pairs:
            german, english = clean(raw_german), clean(raw_english)
            kind = kind_of(german, english)
            if kind not in ("sentence", "phrase"):
                corpus.dropped[kind] += 1
                continue
            if (german, english) in seen:
                corpus.dropped["duplicate"] += 1
                continue
            seen.add((german, english))
            if kind == "sentence":
                corpus.splits[split_of(german)].append((german, english))
            elif phrases:
                corpus.phrases.append((german, english))
            else:
                corpus.dropped["phrase (--phrases keeps them)"] += 1
    train_english = {english for _, english in corpus.splits["train"]}
    for name in ("val", "test"):
        kept = [pair for pair in corpus.splits[name] if pair[1] not in train_english]
        corpus.dropped[f"{name} pair whose English is also in train"] += len(corpus.splits[name]) - len(kept)
        corpus.splits[name] = kept
    held_out = {text for name in ("val", "test") for pair in corpus.splits[name] for text in pair}
    kept = [pair for pair in corpus.phrases if not set(pair) & held_out]
    corpus.dropped["phrase equal to a val or test side"] += len(corpus.phrases) - len(kept)
    corpus.phrases = kept
    return corpus


def write(corpus: Corpus, out: Path) -> list[Path]:
    """Line-aligned files, one pair a line: {split}.de / {split}.en, and phrases.de / phrases.en when there are any."""
    out.mkdir(parents=True, exist_ok=True)
    sets = dict(corpus.splits, **({"phrases": corpus.phrases} if corpus.phrases else {}))
    written = []
    for name, pairs in sets.items():
        for side, language in ((0, "de"), (1, "en")):
            path = out / f"{name}.{language}"
            path.write_text("".join(pair[side] + "\n" for pair in pairs), encoding="utf-8")
            written.append(path)
    return written


def fetch(folder: Path) -> Path:
    """Download Debian's trans-de-en into folder and extract it; the dictionary file's path."""
    subprocess.run(["apt-get", "download", "trans-de-en"], cwd=folder, check=True, capture_output=True)
    (package,) = folder.glob("trans-de-en_*.deb")
    subprocess.run(["dpkg-deb", "-x", str(package), str(folder / "root")], check=True)
    return folder / "root" / "usr" / "share" / "trans" / "de-en"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.ding", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--source", type=Path, help="the dictionary file (Debian: /usr/share/trans/de-en)")
    where.add_argument("--fetch", action="store_true", help="download and extract Debian's trans-de-en (apt-get)")
    parser.add_argument("--out", type=Path, required=True, help="folder for {train,val,test}.{de,en}")
    parser.add_argument("--phrases", action="store_true", help="also write short phrase pairs (phrases.{de,en})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            source = fetch(Path(scratch)) if args.fetch else args.source
            with source.open(encoding="utf-8") as lines:
                corpus = build(lines, phrases=args.phrases)
        except (OSError, UnicodeDecodeError, subprocess.CalledProcessError) as error:
            sys.exit(f"error: cannot read the dictionary: {error}")
    write(corpus, args.out)
    counts = {name: len(pairs) for name, pairs in corpus.splits.items()}
    print(f"wrote {args.out}: " + ", ".join(f"{name} {count:,}" for name, count in counts.items())
          + (f", phrases {len(corpus.phrases):,}" if args.phrases else ""))
    for reason, count in corpus.dropped.most_common():
        if count:
            print(f"  dropped {count:,}: {reason}")


if __name__ == "__main__":
    main()
