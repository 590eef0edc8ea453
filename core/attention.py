"""Scaled dot-product attention and multi-head attention, written from the formulas.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .heads import AttentionTrace


def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None, dropout: nn.Module | None = None
) -> tuple[Tensor, Tensor]:
    """Return ``(softmax(Q K^T / sqrt(d_k)) V, weights)``.

    query: [..., Lq, d_k], key: [..., Lk, d_k], value: [..., Lk, d_v].
    mask: boolean, broadcastable to [..., Lq, Lk]; True where a query may attend to a key. Masked keys get
    weight exactly 0. Every query must be allowed at least one key.
    Returns output [..., Lq, d_v] and weights [..., Lq, Lk] (each row sums to 1).
    """
    d_k = query.size(-1)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)  # [..., Lq, Lk]
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    attended = dropout(weights) if dropout is not None else weights
    return torch.matmul(attended, value), weights


def causal_mask(query_length: int, key_length: int, device: torch.device | None = None) -> Tensor:
    """Boolean [Lq, Lk] mask where query i (the last Lq of Lk positions) sees keys 0..(Lk - Lq + i)."""
    offset = key_length - query_length
    query_positions = torch.arange(query_length, device=device).unsqueeze(1) + offset  # [Lq, 1]
    key_positions = torch.arange(key_length, device=device).unsqueeze(0)  # [1, Lk]
    return key_positions <= query_positions


class MultiHeadAttention(nn.Module):
    """h parallel attention heads over learned projections W^Q, W^K, W^V and the output projection W^O.

    Keys and values are projected separately (:meth:`project_key_value`) so that a decoder can cache them:
    self-attention appends one step's keys/values, cross-attention projects the encoder memory once.
    """

    def __init__(self, d_model: int, n_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(attention_dropout)

    def split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.d_head).transpose(1, 2)  # [B, L, D] -> [B, H, L, d_head]

    def merge_heads(self, x: Tensor) -> Tensor:
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.n_heads * self.d_head)  # [B, H, L, d_head] -> [B, L, D]

    def project_key_value(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, L, D] -> keys and values [B, H, L, d_head]."""
        return self.split_heads(self.w_k(x)), self.split_heads(self.w_v(x))

    def attend(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None,
               head_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The heads before W^O: queries x W^Q [B, H, Lq, d_head], each head's softmax(Q K^T / sqrt(d_k)) V
        [B, H, Lq, d_head] and the weights [B, H, Lq, Lk], for x [B, Lq, D] over projected keys/values
        [B, H, Lk, d_head]. head_mask [B, H] (1 on, 0 off) multiplies each head's output."""
        queries = self.split_heads(self.w_q(x))  # [B, H, Lq, d_head]
        heads, weights = scaled_dot_product_attention(queries, keys, values, mask, self.dropout)
        if head_mask is not None:
            heads = heads * head_mask[:, :, None, None]  # [B, H] -> [B, H, 1, 1]
        return queries, heads, weights

    def project_output(self, heads: Tensor) -> Tensor:
        """Concat(head_1, ..., head_h) W^O: [B, H, Lq, d_head] -> [B, Lq, D]."""
        return self.w_o(self.merge_heads(heads))

    def head_outputs(self, heads: Tensor) -> Tensor:
        """Each head's share of the output, head_i W^O_i: [B, H, Lq, d_head] -> [B, H, Lq, D]; their sum over heads
        plus W^O's bias is :meth:`project_output`."""
        batch, n_heads, length, d_head = heads.shape
        # Head i alone in its block of the concatenation, zeros elsewhere: [B, H, Lq, H, d_head] -> [B, H, Lq, D].
        alone = heads.unsqueeze(3) * torch.eye(n_heads, dtype=heads.dtype, device=heads.device)[:, None, :, None]
        return F.linear(alone.reshape(batch, n_heads, length, n_heads * d_head), self.w_o.weight)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None,
                head_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Attend from queries x [B, Lq, D] over projected keys/values [B, H, Lk, d_head].

        Returns the output [B, Lq, D] and the weights of every head [B, H, Lq, Lk].
        """
        output, weights, _ = self.traced(x, keys, values, mask, head_mask)
        return output, weights

    def traced(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None,
               head_mask: Tensor | None = None, trace: bool = False) -> tuple[Tensor, Tensor, AttentionTrace | None]:
        """:meth:`forward`, and with ``trace`` the :class:`core.heads.AttentionTrace` of this call (else None)."""
        queries, heads, weights = self.attend(x, keys, values, mask, head_mask)
        output = self.project_output(heads)
        if not trace:
            return output, weights, None
        return output, weights, AttentionTrace(x, queries, keys, values, heads, self.head_outputs(heads))
