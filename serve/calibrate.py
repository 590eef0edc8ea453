"""Calibrate the confidence of exported bundles, from the data alone, and print the table that judges it.

    python -m serve.calibrate --ding /usr/share/trans/de-en [--model models/en-de/onnx] [--data DIR] [--seed 21]

In-domain means caption-like: the shipped models translate Multi30K's captions well (about 41 BLEU) and, although
their last fine-tuning also saw the Ding dictionary's everyday sentences (Debian's ``trans-de-en``, split by
:mod:`core.ding`), they still translate those badly (about 4 sacreBLEU), so everyday sentences are calibrated as
out-of-domain ("treat with care"). For each bundle (default: both shipped ones) and its direction src -> tgt, every
set is translated with the bundle (beam 5, as served by default) and described by the features of
:mod:`core.confidence`:

* calibration, in-domain: Multi30K ``val.src``; out-of-domain: the Ding val split (general sentences), the other
  language's ``val.tgt`` fed to this direction (wrong language) and generated noise (random letters, keyboard mash,
  symbols, ``<s></s><pad>``-style markup, other scripts, numbers);
* held out, never used for fitting or the threshold: ``test_2016_flickr.src`` (also translated greedily, to show
  what beam 1 does to the calibration), the Ding test split, ``test_2016_flickr.tgt`` and noise from another seed.

Neither Ding split was trained on.

A logistic regression over :data:`FEATURE_NAMES` is fitted on the calibration sets (each class weighing the same, the
kinds equal within their class); the threshold is the score below which :data:`IN_DOMAIN_FLAGGED` of the calibration
in-domain sentences fall. A word is known when Multi30K train holds it at least :data:`MIN_WORD_COUNT` times. Writes
``confidence.json`` into each bundle, lists it in the manifest (:func:`core.bundle.add_to_manifest`), and prints
each feature's separation and the share of every set flagged.
Torch-free. The Ding file is GPL: it is read here, never copied into the project.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.bundle import BundleError, OnnxBackend, add_to_manifest
from core.confidence import CONFIDENCE_FILE, FEATURES, ConfidenceModel, feature_values, words_of
from core.data import DataError, read_lines
from core.ding import Corpus, build
from core.translator import BaseTranslator, available_cores

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = (ROOT / "models" / "en-de" / "onnx", ROOT / "models" / "de-en" / "onnx")
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"
DEFAULT_DING = Path("/usr/share/trans/de-en")
SEED = 21  # issue #21
BEAM_SIZE = 5
FEATURE_NAMES = ("mean_token_log_prob", "known_word_share")  # fitted; every feature is measured
IN_DOMAIN_FLAGGED = 0.05  # the threshold flags this share of the calibration in-domain set
MIN_WORD_COUNT = 2  # a training word is known when Multi30K train has it at least this often
NOISE_PER_KIND = 50
L2 = 1e-3  # ridge on the standardized weights: noise is separable, the weights stay finite
KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm", "qwertzuiopü", "asdfghjklöä", "yxcvbnm")
JUNK = ("<s>", "</s>", "<pad>", "<unk>", "<mask>", "[CLS]", "[SEP]", "<br>", "</div>", "&nbsp;", "{{", "}}", "NULL",
        "undefined", "\\n", "<|endoftext|>")
SCRIPTS = ((0x0410, 0x044F), (0x0391, 0x03C9), (0x4E00, 0x4FFF), (0x0627, 0x064A), (0x1F600, 0x1F64F))


@dataclass(frozen=True)
class TextSet:
    """Sentences of one kind for one direction: ``role`` calibration or held_out; ``kind`` in_domain,
    general, wrong_language or noise; translated with ``beam_size``."""

    name: str
    role: str
    kind: str
    texts: list[str]
    beam_size: int = BEAM_SIZE

    @property
    def in_domain(self) -> bool:
        return self.kind == "in_domain"


def noise(seed: int, per_kind: int = NOISE_PER_KIND) -> list[str]:
    """Junk input of six kinds, per_kind of each: random letters, keyboard mash, printable symbols, markup and
    special tokens, other scripts and emoji, numbers and punctuation."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    printable = [chr(c) for c in range(0x21, 0x7F)]

    def word(alphabet, low: int, high: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))

    def mash() -> str:
        row = rng.choice(KEYBOARD_ROWS)
        position, keys = rng.randrange(len(row)), []
        for _ in range(rng.randint(4, 16)):
            position = min(max(position + rng.choice((-1, 0, 1, 1)), 0), len(row) - 1)
            keys.append(row[position])
        return "".join(keys)

    def script_word() -> str:
        low, high = rng.choice(SCRIPTS)
        return "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 8)))

    kinds = [
        lambda: " ".join(word(letters, 2, 10) for _ in range(rng.randint(3, 10))).capitalize() + ".",
        lambda: " ".join(mash() for _ in range(rng.randint(1, 4))),
        lambda: " ".join(word(printable, 2, 8) for _ in range(rng.randint(2, 8))),
        lambda: rng.choice(("", " ")).join(rng.choice(JUNK) for _ in range(rng.randint(2, 10))),
        lambda: " ".join(script_word() for _ in range(rng.randint(2, 8))),
        lambda: " ".join(word("0123456789.,:-+%!?", 1, 6) for _ in range(rng.randint(2, 8))),
    ]
    return [kind() for kind in kinds for _ in range(per_kind)]


def training_words(path: Path, min_count: int = MIN_WORD_COUNT) -> frozenset[str]:
    """The words (:func:`core.confidence.words_of`) seen at least min_count times in a training file."""
    counts = Counter(word for line in read_lines(path) for word in words_of(line))
    return frozenset(word for word, count in counts.items() if count >= min_count)


def ding_side(corpus: Corpus, split: str, language: str) -> list[str]:
    """The ``language`` ("de" or "en") side of one split of the Ding corpus."""
    return [pair[0 if language == "de" else 1] for pair in corpus.splits[split]]


def text_sets(data: Path, ding: Corpus, source: str, target: str, seed: int) -> list[TextSet]:
    """The calibration and held-out sets of the direction source -> target."""
    test = read_lines(data / f"test_2016_flickr.{source}")
    return [
        TextSet(f"Multi30K val.{source}", "calibration", "in_domain", read_lines(data / f"val.{source}")),
        TextSet(f"Ding val.{source}", "calibration", "general", ding_side(ding, "val", source)),
        TextSet(f"Multi30K val.{target} (wrong language)", "calibration", "wrong_language",
                read_lines(data / f"val.{target}")),
        TextSet(f"noise (seed {seed})", "calibration", "noise", noise(seed)),
        TextSet(f"Multi30K test_2016_flickr.{source}", "held_out", "in_domain", test),
        TextSet(f"Multi30K test_2016_flickr.{source}, greedy", "held_out", "in_domain", test, beam_size=1),
        TextSet(f"Ding test.{source}", "held_out", "general", ding_side(ding, "test", source)),
        TextSet(f"Multi30K test_2016_flickr.{target} (wrong language)", "held_out", "wrong_language",
                read_lines(data / f"test_2016_flickr.{target}")),
        TextSet(f"noise (seed {seed + 1})", "held_out", "noise", noise(seed + 1)),
    ]


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = L2) -> tuple[np.ndarray, float]:
    """Weighted logistic regression by Newton's method: x [N, F] standardized, y [N] in {0, 1}, weight [N] summing
    to the number of classes; ``l2`` on the feature weights, not the bias. Returns (weights [F], bias)."""
    design = np.hstack([x, np.ones((len(x), 1))])  # [N, F + 1]
    ridge = np.diag([l2] * x.shape[1] + [0.0])
    beta = np.zeros(design.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-design @ beta))  # [N]
        gradient = design.T @ (weight * (p - y)) + ridge @ beta
        hessian = design.T @ (design * (weight * p * (1 - p))[:, None]) + ridge
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return beta[:-1], float(beta[-1])


def auc(in_domain: np.ndarray, out_of_domain: np.ndarray) -> float:
    """P(an in-domain value > an out-of-domain one), ties counting half: 1 separates perfectly, 0.5 not at all."""
    ordered = np.sort(out_of_domain)
    below = np.searchsorted(ordered, in_domain, "left")
    ties = np.searchsorted(ordered, in_domain, "right") - below
    return float((below + 0.5 * ties).sum() / (len(in_domain) * len(out_of_domain)))


def features_of(translator: BaseTranslator, texts: TextSet, words: frozenset[str]) -> np.ndarray:
    """Every feature of :data:`core.confidence.FEATURES` for each non-empty text: [N, len(FEATURES)]."""
    translations = translator.translate([t for t in texts.texts if t.strip()], beam_size=texts.beam_size,
                                        progress=sys.stderr.isatty())
    return np.asarray([feature_values(t, FEATURES, words) for t in translations])


def calibrate(bundle: Path, data: Path, ding: Corpus, seed: int, workers: int) -> tuple[ConfidenceModel, dict]:
    """Fit the confidence model of one bundle; returns it and the report of every set."""
    backend, tokenizer, manifest = OnnxBackend.from_bundle(bundle)  # the old confidence.json, if any, is not read
    translator = BaseTranslator(backend, tokenizer, workers=workers)
    languages = manifest.get("languages") or {}
    source, target = languages.get("source"), languages.get("target")
    if {source, target} != {"en", "de"}:
        raise BundleError(f"{bundle}: calibration needs an en-de or de-en bundle, its languages are {languages}")
    words = training_words(data / f"train.{source}")
    sets = text_sets(data, ding, source, target, seed)
    values = [features_of(translator, s, words) for s in sets]  # [N_set, len(FEATURES)] each

    columns = [list(FEATURES).index(name) for name in FEATURE_NAMES]
    calibration = [(s, v) for s, v in zip(sets, values) if s.role == "calibration"]
    x = np.vstack([v[:, columns] for _, v in calibration])  # [N, F]
    y = np.concatenate([np.full(len(v), float(s.in_domain)) for s, v in calibration])
    kinds = Counter(s.in_domain for s, _ in calibration)
    weight = np.concatenate([np.full(len(v), 1 / (kinds[s.in_domain] * len(v)))
                             for s, v in calibration])  # each class weighs 1, the kinds of a class equally
    mean, scale = x.mean(axis=0), x.std(axis=0)
    weights, bias = fit_logistic((x - mean) / scale, y, weight)
    fitted = ConfidenceModel(FEATURE_NAMES, tuple(mean.tolist()), tuple(scale.tolist()), tuple(weights.tolist()),
                             bias, 0.0, words)
    scores = [np.asarray([fitted.score(row[columns]) for row in v]) for v in values]
    in_scores = np.concatenate([score for s, score in zip(sets, scores) if s.role == "calibration" and s.in_domain])
    threshold = float(np.quantile(in_scores, IN_DOMAIN_FLAGGED))
    model = ConfidenceModel(FEATURE_NAMES, fitted.mean, fitted.scale, fitted.weights, bias, threshold, words)

    in_calibration = np.vstack([v for s, v in calibration if s.in_domain])
    out_calibration = np.vstack([v for s, v in calibration if not s.in_domain])
    report = {
        "direction": f"{source}-{target}",
        "seed": seed,
        "beam_size": BEAM_SIZE,
        "in_domain_flagged_target": IN_DOMAIN_FLAGGED,
        "feature_auc": {name: round(auc(in_calibration[:, i], out_calibration[:, i]), 4)
                        for i, name in enumerate(FEATURES)},
        "sets": [{"name": s.name, "role": s.role, "kind": s.kind, "beam_size": s.beam_size, "sentences": len(score),
                  "flagged": round(float((score < threshold).mean()), 4)} for s, score in zip(sets, scores)],
    }
    return model, report


def write(bundle: Path, model: ConfidenceModel, report: dict) -> None:
    """Write the bundle's confidence.json (the model and how it was calibrated) and list it in the manifest."""
    spec = {**model.to_dict(), "calibration": report}
    (bundle / CONFIDENCE_FILE).write_text(json.dumps(spec, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    add_to_manifest(bundle, CONFIDENCE_FILE)


def print_report(bundle: Path, model: ConfidenceModel, report: dict) -> None:
    shown = bundle.resolve().relative_to(ROOT) if bundle.resolve().is_relative_to(ROOT) else bundle
    print(f"\n{shown} ({report['direction']}, beam {report['beam_size']}, seed {report['seed']})")
    print("feature AUC on the calibration sets (P(in-domain value > out-of-domain value)): "
          + ", ".join(f"{name} {value:.3f}" for name, value in report["feature_auc"].items()))
    print("fitted: " + ", ".join(f"{name} {weight:+.3f}" for name, weight in zip(model.features, model.weights))
          + f", bias {model.bias:+.3f} (standardized features); threshold {model.threshold:.4f}")
    print("\n| set | role | sentences | flagged out_of_domain |\n| --- | --- | --- | --- |")
    for row in report["sets"]:
        print(f"| {row['name']} | {row['role'].replace('_', ' ')} | {row['sentences']} | {row['flagged']:.1%} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append",
                        help="bundle folder; repeat for more (default: models/en-de/onnx and models/de-en/onnx)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Multi30K folder (train, val, "
                        "test_2016_flickr .en/.de; default ../shared/data/multi30k)")
    parser.add_argument("--ding", type=Path, default=DEFAULT_DING,
                        help="the Ding dictionary file of Debian's trans-de-en (default /usr/share/trans/de-en)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help=f"draws the noise (default {SEED})")
    parser.add_argument("--workers", type=int, default=available_cores(), help="batches translated at once")
    args = parser.parse_args(argv)
    try:
        ding = build(read_lines(args.ding))
    except DataError as error:
        sys.exit(f"error: {error}")
    for bundle in args.model or DEFAULT_MODELS:
        try:
            model, report = calibrate(bundle, args.data, ding, args.seed, args.workers)
        except (BundleError, DataError) as error:
            sys.exit(f"error: {error}")
        write(bundle, model, report)
        print_report(bundle, model, report)


if __name__ == "__main__":
    main()
