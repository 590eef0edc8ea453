"""The sinusoidal positional encoding of "Attention Is All You Need", in numpy (no torch).

The model (:mod:`core.model`) and the demo's plot both use this one table.
"""

from __future__ import annotations

import numpy as np


def sinusoidal_table(length: int, d_model: int) -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    Computed in float64, returned as float32 [length, d_model].
    """
    if d_model <= 0 or d_model % 2:
        raise ValueError(f"d_model must be a positive even number, got {d_model}")
    if length < 0:
        raise ValueError(f"length must not be negative, got {length}")
    position = np.arange(length, dtype=np.float64)[:, None]  # [length, 1]
    two_i = np.arange(0, d_model, 2, dtype=np.float64)  # [d_model / 2]
    angle = position / np.power(10000.0, two_i / d_model)  # [length, d_model / 2]
    table = np.empty((length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle)
    return table.astype(np.float32)
