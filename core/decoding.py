"""The PyTorch reference for search: a :class:`~core.search.SearchBackend` over ``Transformer.encode/decode``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .model import KVCache, Transformer
from .tokenizer import Tokenizer
from .translator import BaseTranslator


@dataclass(frozen=True)
class TorchState:
    source_mask: Tensor  # [N, S]
    cache: KVCache


class TorchBackend:
    """Runs the model's encode/decode seams with the KV cache; numpy in, numpy out."""

    def __init__(self, model: Transformer) -> None:
        self.model = model.eval()
        self.config = model.config
        self.max_beam_size = model.config.vocab_size // 2
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
    def log_probs(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray) -> np.ndarray:
        encoded = self.model.encode(torch.from_numpy(source_ids).to(self.device))
        target = torch.from_numpy(decoder_input_ids).to(self.device)
        output = self.model.decode(target, encoded.source_mask, self.model.start_cache(encoded.memory))
        return torch.log_softmax(output.logits.float(), dim=-1).cpu().numpy()  # [B, T, V]

    @torch.inference_mode()
    def reorder(self, state: TorchState, index: np.ndarray) -> TorchState:
        index_tensor = torch.from_numpy(index).to(self.device)
        return TorchState(state.source_mask.index_select(0, index_tensor), state.cache.reorder(index_tensor))


class TorchTranslator(BaseTranslator):
    """A model folder (config.json, model.safetensors, tokenizer.json) translated with PyTorch::

        TorchTranslator("models/en-de").translate(["Two dogs run through the snow."], beam_size=5)[0].text

    The same ``translate`` keywords and results as ``serve.Translator`` (both are :class:`BaseTranslator`).
    """

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", workers: int = 1) -> None:
        self.model = Transformer.from_pretrained(model_dir, device=device)
        super().__init__(TorchBackend(self.model), Tokenizer.load(model_dir), workers=workers)
