"""The general-domain training mix of the shipped models: Multi30K, its synthetic copies and the Ding corpus.

    python -m core.mix --multi30k ../shared/data/multi30k --ding build/ding \
        --distilled-de build/mix/train.ende.de --distilled-en build/mix/train.deen.en --out build/mix

``--distilled-de`` is Multi30K ``train.en`` translated by the English→German model, ``--distilled-en`` is
``train.de`` translated by the German→English model (``python -m serve translate``). Each direction src→tgt gets:

* Multi30K train (the real pairs);
* the same sources with this direction's translations as targets (sequence-level distillation);
* this direction's back-translations as sources with the real targets (back-translation);
* the Ding train sentence pairs :data:`DING_COPIES` times (they are fewer and unlike the captions);
* :data:`PHRASES` of the Ding phrase pairs, drawn with ``random.Random(SEED)``.

Writes ``{en-de,de-en}.{src,tgt}`` (the training pairs) and ``val.{de,en}`` (Multi30K val, then the Ding val split:
the mixed validation set that chose the released weights) and prints the counts.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from .data import DataError, read_lines

DING_COPIES = 4
PHRASES = 25_000
SEED = 24


def training_pairs(multi30k: dict[str, list[str]], distilled: dict[str, list[str]], ding: dict[str, list[str]],
                   phrases: dict[str, list[str]], source: str, target: str, seed: int = SEED,
                   phrase_count: int = PHRASES) -> tuple[list[str], list[str]]:
    """The (sources, targets) of direction source→target. Each argument maps a language to its lines:
    ``distilled[lang]`` are Multi30K train's sentences of the other language translated into ``lang``."""
    sizes = {len(multi30k[source]), len(multi30k[target]), len(distilled[source]), len(distilled[target])}
    if len(sizes) != 1:
        raise DataError(f"Multi30K train and its translations must have one line per pair, got sizes {sorted(sizes)}")
    picked = random.Random(seed).sample(range(len(phrases[source])), min(phrase_count, len(phrases[source])))
    sources = (multi30k[source] + multi30k[source] + distilled[source] + ding[source] * DING_COPIES
               + [phrases[source][i] for i in picked])
    targets = (multi30k[target] + distilled[target] + multi30k[target] + ding[target] * DING_COPIES
               + [phrases[target][i] for i in picked])
    return sources, targets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.mix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--multi30k", type=Path, required=True, help="folder with train.{en,de} and val.{en,de}")
    parser.add_argument("--ding", type=Path, required=True, help="python -m core.ding --phrases output folder")
    parser.add_argument("--distilled-de", type=Path, required=True, help="Multi30K train.en translated into German")
    parser.add_argument("--distilled-en", type=Path, required=True, help="Multi30K train.de translated into English")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        multi30k = {lang: read_lines(args.multi30k / f"train.{lang}") for lang in ("en", "de")}
        distilled = {"de": read_lines(args.distilled_de), "en": read_lines(args.distilled_en)}
        ding = {lang: read_lines(args.ding / f"train.{lang}") for lang in ("en", "de")}
        phrases = {lang: read_lines(args.ding / f"phrases.{lang}") for lang in ("en", "de")}
        val = {lang: read_lines(args.multi30k / f"val.{lang}") + read_lines(args.ding / f"val.{lang}")
               for lang in ("en", "de")}
        args.out.mkdir(parents=True, exist_ok=True)
        for source, target in (("en", "de"), ("de", "en")):
            for lang, side in zip((source, target), training_pairs(multi30k, distilled, ding, phrases, source, target)):
                (args.out / f"{source}-{target}.{lang}").write_text("".join(f"{line}\n" for line in side),
                                                                     encoding="utf-8")
            print(f"{source}-{target}: {len(side):,} pairs")
        for lang, side in val.items():
            (args.out / f"val.{lang}").write_text("".join(f"{line}\n" for line in side), encoding="utf-8")
    except (DataError, OSError) as error:
        sys.exit(f"error: {error}")
    print(f"val: {len(val['en']):,} pairs (Multi30K, then Ding)")


if __name__ == "__main__":
    main()
