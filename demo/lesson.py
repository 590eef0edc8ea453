"""The article's worked example of self-attention, step by step, and the positional-encoding table (no Gradio).

The article is the project's seed, "Transformer注意力机制的发展历程与里程碑" (in Chinese), on the formulas of
"Attention Is All You Need" (Vaswani et al., 2017).

"Transformer is powerful": three tokens with 3-dimensional embeddings, plus the article's positional vectors, one
head with d_k = d_v = 3, and Q, K, V from random projections seeded by the user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.positional import sinusoidal_table

TOKENS = ("Transformer", "is", "powerful")
EMBEDDINGS = np.array([[0.5, 0.1, 0.3], [0.2, 0.6, 0.1], [0.3, 0.4, 0.7]])  # [tokens, d_model]
POSITION_VECTORS = np.array([[0.0, 0.1, 0.2], [0.3, 0.4, 0.5], [0.6, 0.7, 0.8]])  # the article's, for illustration
MAX_PE_LENGTH = 512
MAX_PE_D_MODEL = 1024


@dataclass(frozen=True)
class WorkedExample:
    """Every intermediate of softmax(QK^T / sqrt(d_k)) V for the article's three tokens."""

    seed: int | None  # of the random projections (None when they were given)
    tokens: tuple[str, ...]
    embeddings: np.ndarray  # [3, 3]
    position_vectors: np.ndarray  # [3, 3]
    inputs: np.ndarray  # embeddings + position vectors, [3, 3]
    w_query: np.ndarray  # [d_model, d_k]
    w_key: np.ndarray  # [d_model, d_k]
    w_value: np.ndarray  # [d_model, d_v]
    query: np.ndarray  # inputs @ w_query, [3, d_k]
    key: np.ndarray  # inputs @ w_key, [3, d_k]
    value: np.ndarray  # inputs @ w_value, [3, d_v]
    scores: np.ndarray  # query @ key.T, [3, 3]
    scaled_scores: np.ndarray  # scores / sqrt(d_k)
    weights: np.ndarray  # row softmax of scaled_scores; each row sums to 1
    output: np.ndarray  # weights @ value, [3, d_v]

    @property
    def d_k(self) -> int:
        return self.key.shape[1]


def softmax_rows(matrix: np.ndarray) -> np.ndarray:
    """softmax of each row: exp(x - max) / sum(exp(x - max))."""
    exponentials = np.exp(matrix - matrix.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def worked_example(seed: int = 0) -> WorkedExample:
    """The article's example with W^Q, W^K, W^V drawn from a standard normal seeded by seed (0 to 2^32 - 1)."""
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"the seed must be a whole number from 0 to {2**32 - 1}, got {seed!r}")
    generator = np.random.default_rng(seed)
    w_query, w_key, w_value = (generator.standard_normal((3, 3)) for _ in range(3))
    return self_attention_steps(w_query, w_key, w_value, seed=seed)


def self_attention_steps(w_query: np.ndarray, w_key: np.ndarray, w_value: np.ndarray, *,
                         seed: int | None = None) -> WorkedExample:
    """softmax(QK^T / sqrt(d_k)) V for the article's three tokens and the given projections, step by step."""
    inputs = EMBEDDINGS + POSITION_VECTORS
    query, key, value = inputs @ w_query, inputs @ w_key, inputs @ w_value
    scores = query @ key.T
    scaled_scores = scores / math.sqrt(key.shape[1])
    weights = softmax_rows(scaled_scores)
    return WorkedExample(seed, TOKENS, EMBEDDINGS, POSITION_VECTORS, inputs, w_query, w_key, w_value, query, key,
                         value, scores, scaled_scores, weights, weights @ value)


def positional_encoding(length: int, d_model: int) -> np.ndarray:
    """The model's own sinusoidal table [length, d_model] (:func:`core.positional.sinusoidal_table`), bounded."""
    if not 1 <= length <= MAX_PE_LENGTH:
        raise ValueError(f"the length must be from 1 to {MAX_PE_LENGTH}, got {length}")
    if not 2 <= d_model <= MAX_PE_D_MODEL or d_model % 2:
        raise ValueError(f"d_model must be an even number from 2 to {MAX_PE_D_MODEL}, got {d_model}")
    return sinusoidal_table(length, d_model)
