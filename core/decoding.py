"""The PyTorch reference for search: a :class:`~core.search.SearchBackend` over ``Transformer.encode/decode``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .model import KVCache, Transformer
from .search import Translation, translate
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class TorchState:
    source_mask: Tensor  # [N, S]
    cache: KVCache


class TorchBackend:
    """Runs the model's encode/decode seams with the KV cache; numpy in, numpy out."""

    def __init__(self, model: Transformer) -> None:
        self.model = model.eval()
        self.config = model.config
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def start(self, source_ids: np.ndarray) -> TorchState:
        encoded = self.model.encode(torch.from_numpy(source_ids).to(self.device))
        return TorchState(encoded.source_mask, self.model.start_cache(encoded.memory))

    @torch.inference_mode()
    def step(self, last_tokens: np.ndarray, state: TorchState, k: int) -> tuple[np.ndarray, np.ndarray, TorchState]:
        target = torch.from_numpy(last_tokens).to(self.device).unsqueeze(1)  # [N] -> [N, 1]
        output = self.model.decode(target, state.source_mask, state.cache)
        log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)  # [N, V]
        values, ids = (tensor.cpu().numpy() for tensor in torch.topk(log_probs, k, dim=-1))  # [N, k], best first
        order = np.lexsort((ids, -values), axis=1)  # equal log-probabilities in token-id order, as the protocol says
        return (np.take_along_axis(values, order, axis=1), np.take_along_axis(ids, order, axis=1),
                TorchState(state.source_mask, output.cache))

    @torch.inference_mode()
    def attend(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encoded = self.model.encode(torch.from_numpy(source_ids).to(self.device), output_attentions=True)
        target = torch.from_numpy(decoder_input_ids).to(self.device)
        output = self.model.decode(target, encoded.source_mask, self.model.start_cache(encoded.memory),
                                   output_attentions=True)
        return tuple(weights.float().cpu().numpy()
                     for weights in (encoded.attentions, output.self_attentions, output.cross_attentions))

    @torch.inference_mode()
    def reorder(self, state: TorchState, index: np.ndarray) -> TorchState:
        index_tensor = torch.from_numpy(index).to(self.device)
        return TorchState(state.source_mask.index_select(0, index_tensor), state.cache.reorder(index_tensor))


class Translator:
    """A model folder (config.json, model.safetensors, tokenizer.json) ready to translate with PyTorch."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer) -> None:
        tokenizer.check_compatible(model.config)
        self.model = model
        self.tokenizer = tokenizer
        self.backend = TorchBackend(model)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "Translator":
        return cls(Transformer.from_pretrained(directory, device=device), Tokenizer.load(directory))

    def translate(self, texts: Sequence[str], **options) -> list[Translation]:
        """Translate texts; options are those of :func:`core.search.translate` (beam_size=1 is greedy)."""
        return translate(self.backend, self.tokenizer, texts, **options)
