"""Looking at single heads, torch-free: switching heads off, and the numbers behind each attention weight.

A **head mask** holds, per attention kind, a [layers, heads] array of 1 (on) and 0 (off). A switched-off head's
output softmax(q K^T / sqrt(d_k)) V is multiplied by 0 before W^O, so it contributes nothing but W^O's bias; an
all-ones mask leaves every number as it was, bit for bit. The model (:meth:`core.model.Transformer.encode` and
``decode``), the exported graphs and every search backend take one.

An :class:`AttentionTrace` is one attention sublayer's computation for every head: the sublayer's input, q, K, V,
each head's output and its share of the sublayer's output through W^O. ``translate(..., return_trace=True)`` returns
one per kind (:class:`Trace`) for the chosen translation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .config import TransformerConfig

HEAD_KINDS = ("encoder", "decoder", "cross")  # encoder self-attention, decoder self-attention, encoder-decoder


@dataclass(frozen=True)
class HeadMask:
    """Which heads are on: per kind a float32 [layers, heads] array of 1 (on) and 0 (off)."""

    encoder: np.ndarray
    decoder: np.ndarray
    cross: np.ndarray

    @classmethod
    def all_on(cls, config: TransformerConfig) -> "HeadMask":
        encoder = np.ones((config.n_encoder_layers, config.n_heads), dtype=np.float32)
        decoder = np.ones((config.n_decoder_layers, config.n_heads), dtype=np.float32)
        return cls(encoder, decoder, decoder.copy())

    @classmethod
    def switched_off(cls, heads_off: Iterable, config: TransformerConfig) -> "HeadMask | None":
        """The mask with the heads ``heads_off`` names switched off: (kind, layer, head) triples, kind one of
        :data:`HEAD_KINDS`, layer and head counted from 0. None when the list is empty (every head on). Raises
        ValueError, naming the first bad entry, for anything else."""
        if heads_off is None or isinstance(heads_off, (str, bytes)):
            raise ValueError("heads_off must be a list of (kind, layer, head) entries")
        mask = cls.all_on(config)
        entries = list(heads_off)
        for entry in entries:
            kind, layer, head = parse_head(entry, config)
            getattr(mask, kind)[layer, head] = 0.0
        return mask if entries else None

    def rows(self, count: int) -> "HeadMask":
        """The mask repeated for ``count`` rows: each kind [count, layers, heads] (what the graphs take)."""
        return HeadMask(*(np.repeat(part[None], count, axis=0) for part in self.parts()))  # [L, H] -> [count, L, H]

    def parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.encoder, self.decoder, self.cross

    def off(self) -> list[tuple[str, int, int]]:
        """The switched-off heads as (kind, layer, head), in kind, layer, head order."""
        return [(kind, int(layer), int(head)) for kind, part in zip(HEAD_KINDS, self.parts())
                for layer, head in zip(*np.nonzero(part == 0))]


def parse_head(entry: Any, config: TransformerConfig) -> tuple[str, int, int]:
    """(kind, layer, head) from a triple or a "kind.layer.head" string, checked against the model's sizes."""
    parts = entry.split(".") if isinstance(entry, str) else entry
    if not isinstance(parts, (list, tuple)) or len(parts) != 3:
        raise ValueError(f"a head is (kind, layer, head) or 'kind.layer.head', got {entry!r}")
    kind, layer, head = (int(part) if isinstance(entry, str) and part.isdecimal() and part.isascii() else part
                         for part in parts)
    if kind not in HEAD_KINDS:
        raise ValueError(f"head kind must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
    layers = config.n_encoder_layers if kind == "encoder" else config.n_decoder_layers
    for name, value, count in (("layer", layer, layers), ("head", head, config.n_heads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < count:
            raise ValueError(f"{kind} {name} must be an integer from 0 to {count - 1}, got {value!r}")
    return kind, int(layer), int(head)


@dataclass(frozen=True)
class AttentionTrace:
    """One attention sublayer's computation, every head; arrays (numpy or torch) with a leading batch axis B, or
    layers first [L, B, ...] when stacked, or one sentence's [L, ...] in a :class:`Trace`.

    The weights are softmax(queries keys^T / sqrt(d_head)) (the heatmaps); ``heads`` is weights @ values times the
    head mask; the sublayer's output is the sum of ``head_outputs`` over heads plus W^O's bias.
    """

    inputs: Any  # [B, Lq, D] the sublayer's input x (after LayerNorm when the model is pre-norm)
    queries: Any  # [B, H, Lq, d_head] q = x W^Q, split into heads
    keys: Any  # [B, H, Lk, d_head] K (for cross-attention: from the encoder's memory)
    values: Any  # [B, H, Lk, d_head] V
    heads: Any  # [B, H, Lq, d_head] each head's softmax(q K^T / sqrt(d_head)) V
    head_outputs: Any  # [B, H, Lq, D] each head's share of the output: heads_h W^O_h

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in fields(cls)]

    def parts(self) -> tuple:
        """The fields in declaration order (the graphs' trace outputs are in this order)."""
        return tuple(getattr(self, name) for name in self.field_names())


@dataclass(frozen=True)
class Trace:
    """The :class:`AttentionTrace` of every kind for one translation, each field [layers, ...] without the batch
    axis, cut to the real lengths: encoder Lq = Lk = S (source tokens and </s>); decoder and cross Lq = T (the
    decoding steps, as :class:`core.search.Attention`), decoder Lk = T, cross Lk = S."""

    encoder: AttentionTrace
    decoder: AttentionTrace
    cross: AttentionTrace

    def of(self, kind: str) -> AttentionTrace:
        if kind not in HEAD_KINDS:
            raise ValueError(f"kind must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
        return getattr(self, kind)


def trace_output_names(kind: str) -> list[str]:
    """The graph outputs that carry a kind's stacked trace: ``{kind}_trace_{field}``."""
    return [f"{kind}_trace_{name}" for name in AttentionTrace.field_names()]
