"""Is a translation probably wrong? A calibrated score of how much a source looks like the model's training data.

A model trained on image captions translates captions well and everything else badly, and it says so only
indirectly: the search is less sure of its tokens, the source holds words it never saw, or it is not even in the
source language. :class:`ConfidenceModel` turns a few such features of a finished translation into a score in
[0, 1] with a logistic regression and labels it against a threshold; both were fitted on calibration sets only
(``python -m serve.calibrate``) and live in a bundle's ``confidence.json``. Scoring reads what the search already
returned: no extra model run. Torch-free.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .search import Translation

CONFIDENCE_FILE = "confidence.json"
CONFIDENCE_FORMAT = "attention-mt-confidence"
CONFIDENCE_FORMAT_VERSION = 1
IN_DOMAIN, OUT_OF_DOMAIN = "in_domain", "out_of_domain"
MESSAGES = {IN_DOMAIN: "looks like the training data",
            OUT_OF_DOMAIN: "outside what this model knows: treat with care"}
WORD = re.compile(r"[^\W\d_]+")  # a run of letters: digits, punctuation and symbols are no words


@dataclass(frozen=True)
class Confidence:
    """How much a translation's source looks like what the model was trained on.

    ``score`` in [0, 1] is the calibrated probability that the source is in-domain (classes weighted equally);
    ``label`` is "in_domain" when ``score`` reaches the bundle's threshold, else "out_of_domain"; ``message`` says
    it in plain words for a visitor.
    """

    score: float
    label: str
    message: str


def words_of(text: str) -> list[str]:
    """The lowercased letter runs of text (NFC), as the known-word share and the calibration count them."""
    return WORD.findall(unicodedata.normalize("NFC", text).lower())


def token_log_probs(translation: "Translation") -> tuple[float, ...]:
    """The chosen hypothesis's per-token log-probabilities (EOS included when it finished)."""
    return translation.hypotheses[0].token_log_probs


def mean_token_log_prob(translation: "Translation", words: frozenset[str]) -> float:
    """The search's average certainty per output token."""
    log_probs = token_log_probs(translation)
    return sum(log_probs) / len(log_probs)


def min_token_log_prob(translation: "Translation", words: frozenset[str]) -> float:
    """The search's least certain output token."""
    return min(token_log_probs(translation))


def known_word_share(translation: "Translation", words: frozenset[str]) -> float:
    """The share of source words seen in the model's training data (0 for a source without words)."""
    found = words_of(translation.source)
    return sum(word in words for word in found) / len(found) if found else 0.0


def tokens_per_word(translation: "Translation", words: frozenset[str]) -> float:
    """Source subwords per whitespace-separated word (``</s>`` not counted): rare words break into many pieces."""
    pieces = len(translation.source_tokens) - 1
    return pieces / max(len(translation.source.split()), 1)


def unknown_character_share(translation: "Translation", words: frozenset[str]) -> float:
    """The share of source characters the model cannot read."""
    return translation.unknown_characters / max(len(translation.source.strip()), 1)


FEATURES: dict[str, Callable[["Translation", frozenset[str]], float]] = {
    "mean_token_log_prob": mean_token_log_prob,
    "min_token_log_prob": min_token_log_prob,
    "known_word_share": known_word_share,
    "tokens_per_word": tokens_per_word,
    "unknown_character_share": unknown_character_share,
}


def feature_values(translation: "Translation", names: Iterable[str], words: frozenset[str]) -> list[float]:
    """The named features of one non-empty translation."""
    return [FEATURES[name](translation, words) for name in names]


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


@dataclass(frozen=True)
class ConfidenceModel:
    """A logistic regression over standardized features, a threshold, and the training words it needs.

    score = sigmoid(bias + sum_i weights[i] * (x_i - mean[i]) / scale[i]), x_i = FEATURES[features[i]].
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    words: frozenset[str]  # the source language's training words (only read by known_word_share)

    def __post_init__(self) -> None:
        unknown = [name for name in self.features if name not in FEATURES]
        if unknown:
            raise ValueError(f"unknown confidence features {unknown}; this version knows {sorted(FEATURES)}")
        if not len(self.features) == len(self.mean) == len(self.scale) == len(self.weights):
            raise ValueError("confidence features, mean, scale and weights must have the same length")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"confidence threshold must be in [0, 1], got {self.threshold}")

    def score(self, values: Iterable[float]) -> float:
        """The in-domain probability of one translation's feature values (in the order of ``features``)."""
        z = self.bias + sum(w * (x - m) / s for w, x, m, s in zip(self.weights, values, self.mean, self.scale))
        return sigmoid(z)

    def assess(self, translation: "Translation") -> Confidence | None:
        """The confidence of one translation; None for an empty source (there is nothing to judge)."""
        if not translation.source_tokens:
            return None
        score = self.score(feature_values(translation, self.features, self.words))
        label = IN_DOMAIN if score >= self.threshold else OUT_OF_DOMAIN
        return Confidence(score=score, label=label, message=MESSAGES[label])

    def to_dict(self) -> dict:
        return {"format": CONFIDENCE_FORMAT, "format_version": CONFIDENCE_FORMAT_VERSION,
                "features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias, "threshold": self.threshold,
                "words": sorted(self.words)}

    @classmethod
    def from_dict(cls, spec: dict) -> "ConfidenceModel":
        if spec.get("format") != CONFIDENCE_FORMAT or spec.get("format_version") != CONFIDENCE_FORMAT_VERSION:
            raise ValueError(f"not an {CONFIDENCE_FORMAT} file of version {CONFIDENCE_FORMAT_VERSION}")
        try:
            return cls(tuple(spec["features"]), tuple(map(float, spec["mean"])), tuple(map(float, spec["scale"])),
                       tuple(map(float, spec["weights"])), float(spec["bias"]), float(spec["threshold"]),
                       frozenset(spec["words"]))
        except (KeyError, TypeError) as error:
            raise ValueError(f"incomplete confidence file: {error!r}") from error

    @classmethod
    def load(cls, path: str | Path) -> "ConfidenceModel":
        """Read a confidence.json (ValueError when it is not one this version reads)."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error
