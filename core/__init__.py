"""core: the Transformer written from the formulas, with its tokenizer, data, search, training and evaluation.

The torch-free parts (config, tokenizer, data, search, the translator shape and the ONNX bundle format in
:mod:`core.bundle`) import without torch; the model parts load torch on first use, so ``serve/`` and ``demo/`` can
share the search, tokenizer and bundle loading without it.
"""

from importlib import import_module

from .config import PRESETS, TransformerConfig
from .search import Hypothesis, Translation, beam_search, translate
from .tokenizer import Tokenizer
from .translator import BaseTranslator

_TORCH_EXPORTS = {
    "scaled_dot_product_attention": "attention",
    "causal_mask": "attention",
    "MultiHeadAttention": "attention",
    "sinusoidal_encoding": "model",
    "Transformer": "model",
    "KVCache": "model",
    "EncoderOutput": "model",
    "DecoderOutput": "model",
    "TorchBackend": "decoding",
    "TorchTranslator": "decoding",
}

__all__ = [
    "PRESETS",
    "TransformerConfig",
    "Hypothesis",
    "Translation",
    "beam_search",
    "translate",
    "Tokenizer",
    "BaseTranslator",
    *_TORCH_EXPORTS,
]


def __getattr__(name: str):
    if name in _TORCH_EXPORTS:
        return getattr(import_module(f".{_TORCH_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")
