"""The encoder-decoder Transformer of "Attention Is All You Need", with explicit seams for search and export.

Public seams:
    encode(source_ids)                       -> EncoderOutput(memory, source_mask, attentions)
    start_cache(memory)                      -> KVCache with the cross-attention keys/values, computed once
    decode(target_ids, source_mask, cache)   -> DecoderOutput(logits, cache, self/cross attentions)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .attention import MultiHeadAttention, causal_mask
from .config import TransformerConfig
from .heads import AttentionTrace
from .positional import sinusoidal_table

WEIGHTS_FILE = "model.safetensors"


def sinusoidal_encoding(length: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    Returns a float32 tensor [length, d_model] (the table of :func:`core.positional.sinusoidal_table`).
    """
    return torch.from_numpy(sinusoidal_table(length, d_model))


@dataclass(frozen=True)
class KVCache:
    """Decoder keys/values: self-attention grows by one entry per step, cross-attention is fixed per source.

    One tensor per decoder layer, each [batch, n_heads, length, d_head]; length is the number of target positions
    decoded so far (self) or the source length (cross). Per-layer tensors (not one stacked tensor) let a step
    append to each layer without splitting and concatenating the whole cache.
    """

    self_keys: tuple[Tensor, ...]
    self_values: tuple[Tensor, ...]
    cross_keys: tuple[Tensor, ...]
    cross_values: tuple[Tensor, ...]

    @property
    def past_length(self) -> int:
        return self.self_keys[0].size(2)

    def reorder(self, index: Tensor) -> "KVCache":
        """Select batch rows by index (beam reordering, growing a batch into beams, dropping finished rows)."""
        return KVCache(*(tuple(layer.index_select(0, index) for layer in part) for part in self.as_tuple()))

    def as_tuple(self) -> tuple[tuple[Tensor, ...], ...]:
        return self.self_keys, self.self_values, self.cross_keys, self.cross_values


@dataclass(frozen=True)
class EncoderOutput:
    memory: Tensor  # [B, S, D]
    source_mask: Tensor  # [B, S] bool, True at real (non-padding) tokens
    attentions: Tensor | None = None  # [n_encoder_layers, B, H, S, S] when requested
    traces: AttentionTrace | None = None  # every field [n_encoder_layers, B, ...] when requested


@dataclass(frozen=True)
class DecoderOutput:
    logits: Tensor  # [B, T, V]
    cache: KVCache
    self_attentions: Tensor | None = None  # [n_decoder_layers, B, H, T, past + T] when requested
    cross_attentions: Tensor | None = None  # [n_decoder_layers, B, H, T, S] when requested
    self_traces: AttentionTrace | None = None  # every field [n_decoder_layers, B, ...] when requested
    cross_traces: AttentionTrace | None = None


def layer_mask(head_mask: Tensor | None, layer: int) -> Tensor | None:
    """One layer's head mask [B, H] of a model-wide [B, layers, H] mask (None: every head on)."""
    return None if head_mask is None else head_mask[:, layer]


def stack_traces(traces: list[AttentionTrace]) -> AttentionTrace:
    """Per-layer traces (each field [B, ...]) -> one trace whose fields are [layers, B, ...]."""
    return AttentionTrace(*(torch.stack(layers) for layers in zip(*(trace.parts() for trace in traces))))


ACTIVATION_FUNCTIONS = {"relu": torch.relu, "swish": F.silu}  # core.config.ACTIVATIONS


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2 (the paper's ReLU; "swish": x * sigmoid(x) in place of max(0, x))."""

    def __init__(self, d_model: int, d_ff: int, activation_dropout: float, activation: str = "relu") -> None:
        super().__init__()
        self.linear_in = nn.Linear(d_model, d_ff)
        self.linear_out = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(activation_dropout)  # on max(0, x W_1 + b_1), as in fairseq's activation_dropout
        self.activation = ACTIVATION_FUNCTIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_out(self.dropout(self.activation(self.linear_in(x))))


class Residual(nn.Module):
    """Residual connection with LayerNorm: post-norm LayerNorm(x + Sublayer(x)), or pre-norm x + Sublayer(LayerNorm(x))."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def sublayer_input(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre_norm else x

    def combine(self, x: Tensor, sublayer_output: Tensor) -> Tensor:
        y = x + self.dropout(sublayer_output)
        return y if self.pre_norm else self.norm(y)


class EncoderLayer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(config.d_model, config.n_heads, config.attention_dropout)
        self.attention_residual = Residual(config.d_model, config.dropout, config.pre_norm)
        self.feed_forward = FeedForward(config.d_model, config.d_ff, config.activation_dropout, config.activation)
        self.feed_forward_residual = Residual(config.d_model, config.dropout, config.pre_norm)

    def forward(self, x: Tensor, mask: Tensor, head_mask: Tensor | None = None,
                trace: bool = False) -> tuple[Tensor, Tensor, AttentionTrace | None]:
        """Returns x, the attention weights and, with trace, the attention sublayer's trace."""
        h = self.attention_residual.sublayer_input(x)
        keys, values = self.self_attention.project_key_value(h)
        attended, weights, attention_trace = self.self_attention.traced(h, keys, values, mask, head_mask, trace)
        x = self.attention_residual.combine(x, attended)
        x = self.feed_forward_residual.combine(x, self.feed_forward(self.feed_forward_residual.sublayer_input(x)))
        return x, weights, attention_trace


class DecoderLayer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(config.d_model, config.n_heads, config.attention_dropout)
        self.self_attention_residual = Residual(config.d_model, config.dropout, config.pre_norm)
        self.cross_attention = MultiHeadAttention(config.d_model, config.n_heads, config.attention_dropout)
        self.cross_attention_residual = Residual(config.d_model, config.dropout, config.pre_norm)
        self.feed_forward = FeedForward(config.d_model, config.d_ff, config.activation_dropout, config.activation)
        self.feed_forward_residual = Residual(config.d_model, config.dropout, config.pre_norm)

    def forward(
        self,
        x: Tensor,
        past_keys: Tensor,
        past_values: Tensor,
        cross_keys: Tensor,
        cross_values: Tensor,
        self_mask: Tensor,
        cross_mask: Tensor,
        self_head_mask: Tensor | None = None,
        cross_head_mask: Tensor | None = None,
        trace: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor], tuple[AttentionTrace | None, AttentionTrace | None]]:
        """Returns x, the self-attention keys/values including this call's positions, the self and cross weights
        and, with trace, the self and cross sublayers' traces (else None)."""
        h = self.self_attention_residual.sublayer_input(x)
        new_keys, new_values = self.self_attention.project_key_value(h)
        keys = torch.cat([past_keys, new_keys], dim=2)  # [B, H, past + T, d_head]
        values = torch.cat([past_values, new_values], dim=2)
        attended, self_weights, self_trace = self.self_attention.traced(h, keys, values, self_mask, self_head_mask,
                                                                        trace)
        x = self.self_attention_residual.combine(x, attended)

        h = self.cross_attention_residual.sublayer_input(x)
        attended, cross_weights, cross_trace = self.cross_attention.traced(h, cross_keys, cross_values, cross_mask,
                                                                           cross_head_mask, trace)
        x = self.cross_attention_residual.combine(x, attended)

        x = self.feed_forward_residual.combine(x, self.feed_forward(self.feed_forward_residual.sublayer_input(x)))
        return x, keys, values, (self_weights, cross_weights), (self_trace, cross_trace)


class Transformer(nn.Module):
    """Encoder-decoder Transformer with one embedding shared by source, target and output projection."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        self.register_buffer(
            "positional_encoding", sinusoidal_encoding(config.max_positions, config.d_model), persistent=False
        )
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_decoder_layers))
        # Pre-norm stacks need a final LayerNorm; post-norm layers already end with one.
        self.encoder_norm = nn.LayerNorm(config.d_model) if config.pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(config.d_model) if config.pre_norm else nn.Identity()
        # Marian's output bias: part of the weights, not trained here (a buffer, as in transformers); None, and in
        # no state dict, when the config has none
        self.register_buffer("final_logits_bias", torch.zeros(config.vocab_size) if config.final_logits_bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, parameter in self.named_parameters():
            if parameter.dim() > 1 and name != "embedding.weight":
                nn.init.xavier_uniform_(parameter)
            elif name.endswith("bias") and "norm" not in name:
                nn.init.zeros_(parameter)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=self.config.d_model**-0.5)
        with torch.no_grad():
            self.embedding.weight[self.config.pad_id].zero_()

    def embed(self, token_ids: Tensor, offset: int = 0) -> Tensor:
        """Token embeddings scaled by sqrt(d_model) plus the sinusoidal encoding of positions offset.. ."""
        length = token_ids.size(1)
        if offset + length > self.config.max_positions:
            raise ValueError(f"sequence of {offset + length} positions exceeds max_positions={self.config.max_positions}")
        positions = self.positional_encoding[offset : offset + length]  # [L, D]
        return self.embedding_dropout(self.embedding(token_ids) * math.sqrt(self.config.d_model) + positions)

    def encode(self, source_ids: Tensor, output_attentions: bool = False, head_mask: Tensor | None = None,
               output_traces: bool = False) -> EncoderOutput:
        """source_ids [B, S] (padded with pad_id) -> memory [B, S, D] and, on request, every layer's weights and
        traces (:class:`core.heads.AttentionTrace`). head_mask [B, n_encoder_layers, H]: 1 keeps a head, 0 switches
        it off (see :mod:`core.heads`)."""
        source_mask = source_ids != self.config.pad_id  # [B, S]
        attention_mask = source_mask[:, None, None, :]  # [B, 1, 1, S]: queries see only real keys
        x = self.embed(source_ids)
        attentions, traces = [], []
        for index, layer in enumerate(self.encoder_layers):
            x, weights, trace = layer(x, attention_mask, layer_mask(head_mask, index), output_traces)
            attentions.append(weights)
            traces.append(trace)
        return EncoderOutput(
            memory=self.encoder_norm(x),
            source_mask=source_mask,
            attentions=torch.stack(attentions) if output_attentions else None,
            traces=stack_traces(traces) if output_traces else None,
        )

    def start_cache(self, memory: Tensor) -> KVCache:
        """An empty self-attention cache and the cross-attention keys/values of every decoder layer for memory."""
        cross = [layer.cross_attention.project_key_value(memory) for layer in self.decoder_layers]
        cross_keys = tuple(keys for keys, _ in cross)  # each [B, H, S, d_head]
        cross_values = tuple(values for _, values in cross)
        empty = tuple(keys[:, :, :0] for keys in cross_keys)  # each [B, H, 0, d_head]
        return KVCache(empty, empty, cross_keys, cross_values)

    def decode(
        self, target_ids: Tensor, source_mask: Tensor, cache: KVCache, output_attentions: bool = False,
        self_head_mask: Tensor | None = None, cross_head_mask: Tensor | None = None, output_traces: bool = False,
    ) -> DecoderOutput:
        """Decode target_ids [B, T] that follow the cache's past positions; causal within and over the past.

        self_head_mask and cross_head_mask [B, n_decoder_layers, H] switch heads off (0) or keep them (1); on request
        the output carries every layer's weights and the self and cross sublayers' traces."""
        past_length = cache.past_length
        length = target_ids.size(1)
        x = self.embed(target_ids, offset=past_length)
        self_mask = causal_mask(length, past_length + length, device=target_ids.device)  # [T, past + T]
        cross_mask = source_mask[:, None, None, :]  # [B, 1, 1, S]
        keys, values, self_attentions, cross_attentions, self_traces, cross_traces = [], [], [], [], [], []
        for index, layer in enumerate(self.decoder_layers):
            x, layer_keys, layer_values, (self_weights, cross_weights), (self_trace, cross_trace) = layer(
                x,
                cache.self_keys[index],
                cache.self_values[index],
                cache.cross_keys[index],
                cache.cross_values[index],
                self_mask,
                cross_mask,
                layer_mask(self_head_mask, index),
                layer_mask(cross_head_mask, index),
                output_traces,
            )
            keys.append(layer_keys)
            values.append(layer_values)
            self_attentions.append(self_weights)
            cross_attentions.append(cross_weights)
            self_traces.append(self_trace)
            cross_traces.append(cross_trace)
        # tied output projection (plus the output bias where the config has one): [B, T, V]
        logits = F.linear(self.decoder_norm(x), self.embedding.weight, self.final_logits_bias)
        new_cache = KVCache(tuple(keys), tuple(values), cache.cross_keys, cache.cross_values)
        return DecoderOutput(
            logits, new_cache,
            torch.stack(self_attentions) if output_attentions else None,
            torch.stack(cross_attentions) if output_attentions else None,
            stack_traces(self_traces) if output_traces else None,
            stack_traces(cross_traces) if output_traces else None,
        )

    def forward(self, source_ids: Tensor, target_input_ids: Tensor) -> Tensor:
        """Teacher-forced logits [B, T, V] for training: encode, then decode all target positions at once."""
        encoded = self.encode(source_ids)
        return self.decode(target_input_ids, encoded.source_mask, self.start_cache(encoded.memory)).logits

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json and model.safetensors into directory (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "Transformer":
        """Load a model written by save_pretrained; never executes code from the files."""
        directory = Path(directory)
        config = TransformerConfig.load(directory)
        weights_path = directory / WEIGHTS_FILE
        if not weights_path.is_file():
            raise FileNotFoundError(f"no {WEIGHTS_FILE} in {directory}")
        model = cls(config)
        try:
            model.load_state_dict(load_file(str(weights_path)), strict=True)
        except RuntimeError as error:
            raise ValueError(f"{weights_path} does not match {directory / 'config.json'}: {error}") from error
        return model.to(device).eval()

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())
