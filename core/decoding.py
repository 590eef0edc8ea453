"""The PyTorch reference for search: a :class:`~core.search.SearchBackend` over ``Transformer.encode/decode``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .heads import HEAD_KINDS, AttentionTrace, HeadMask
from .model import KVCache, Transformer
from .search import SearchRules
from .tokenizer import Tokenizer
from .translator import BaseTranslator


@dataclass(frozen=True)
class TorchState:
    source_mask: Tensor  # [N, S]
    cache: KVCache
    self_head_mask: Tensor  # [N, dec_layers, H]
    cross_head_mask: Tensor  # [N, dec_layers, H]


class TorchBackend:
    """Runs the model's encode/decode seams with the KV cache; numpy in, numpy out."""

    def __init__(self, model: Transformer) -> None:
        self.model = model.eval()
        self.config = model.config
        self.max_beam_size = model.config.vocab_size // 2
        self.device = next(model.parameters()).device

    def head_masks(self, head_mask: HeadMask | None, count: int) -> tuple[Tensor, Tensor, Tensor]:
        """The encoder, decoder self and cross masks [count, layers, H] of ``head_mask`` (None: every head on)."""
        rows = (head_mask or HeadMask.all_on(self.config)).rows(count)
        return tuple(torch.from_numpy(part).to(self.device) for part in rows.parts())

    @torch.inference_mode()
    def start(self, source_ids: np.ndarray, head_mask: HeadMask | None = None) -> TorchState:
        encoder_mask, self_mask, cross_mask = self.head_masks(head_mask, len(source_ids))
        encoded = self.model.encode(torch.from_numpy(source_ids).to(self.device), head_mask=encoder_mask)
        return TorchState(encoded.source_mask, self.model.start_cache(encoded.memory), self_mask, cross_mask)

    @torch.inference_mode()
    def step(self, last_tokens: np.ndarray, state: TorchState, k: int) -> tuple[np.ndarray, np.ndarray, TorchState]:
        target = torch.from_numpy(last_tokens).to(self.device).unsqueeze(1)  # [N] -> [N, 1]
        output = self.model.decode(target, state.source_mask, state.cache, self_head_mask=state.self_head_mask,
                                   cross_head_mask=state.cross_head_mask)
        log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)  # [N, V]
        values, ids = (tensor.cpu().numpy() for tensor in torch.topk(log_probs, k, dim=-1))  # [N, k], best first
        order = np.lexsort((ids, -values), axis=1)  # equal log-probabilities in token-id order, as the protocol says
        return (np.take_along_axis(values, order, axis=1), np.take_along_axis(ids, order, axis=1),
                TorchState(state.source_mask, output.cache, state.self_head_mask, state.cross_head_mask))

    @torch.inference_mode()
    def teacher_forced(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray, head_mask: HeadMask | None = None,
                       traces: bool = False):
        """One teacher-forced pass with every attention weight (and, with traces, every trace): encoder and decoder
        outputs."""
        encoder_mask, self_mask, cross_mask = self.head_masks(head_mask, len(source_ids))
        encoded = self.model.encode(torch.from_numpy(source_ids).to(self.device), output_attentions=True,
                                    head_mask=encoder_mask, output_traces=traces)
        target = torch.from_numpy(decoder_input_ids).to(self.device)
        return encoded, self.model.decode(target, encoded.source_mask, self.model.start_cache(encoded.memory),
                                          output_attentions=True, self_head_mask=self_mask,
                                          cross_head_mask=cross_mask, output_traces=traces)

    @torch.inference_mode()
    def attend(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
               head_mask: HeadMask | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encoded, output = self.teacher_forced(source_ids, decoder_input_ids, head_mask)
        return tuple(weights.float().cpu().numpy()
                     for weights in (encoded.attentions, output.self_attentions, output.cross_attentions))

    @torch.inference_mode()
    def trace(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
              head_mask: HeadMask | None = None) -> dict[str, AttentionTrace]:
        encoded, output = self.teacher_forced(source_ids, decoder_input_ids, head_mask, traces=True)
        traces = (encoded.traces, output.self_traces, output.cross_traces)
        return {kind: AttentionTrace(*(part.float().cpu().numpy() for part in trace.parts()))
                for kind, trace in zip(HEAD_KINDS, traces)}

    @torch.inference_mode()
    def log_probs(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
                  head_mask: HeadMask | None = None) -> np.ndarray:
        output = self.teacher_forced(source_ids, decoder_input_ids, head_mask)[1]
        return torch.log_softmax(output.logits.float(), dim=-1).cpu().numpy()  # [B, T, V]

    @torch.inference_mode()
    def reorder(self, state: TorchState, index: np.ndarray) -> TorchState:
        index_tensor = torch.from_numpy(index).to(self.device)
        return TorchState(state.source_mask.index_select(0, index_tensor), state.cache.reorder(index_tensor),
                          state.self_head_mask.index_select(0, index_tensor),
                          state.cross_head_mask.index_select(0, index_tensor))


class TorchTranslator(BaseTranslator):
    """A model folder (config.json, model.safetensors, tokenizer.json) translated with PyTorch::

        TorchTranslator("models/en-de").translate(["Two dogs run through the snow."], beam_size=5)[0].text

    The same ``translate`` keywords and results as ``serve.Translator`` (both are :class:`BaseTranslator`).
    """

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", workers: int = 1) -> None:
        self.model = Transformer.from_pretrained(model_dir, device=device)
        super().__init__(TorchBackend(self.model), Tokenizer.load(model_dir), workers=workers,
                         rules=SearchRules.load(model_dir))
