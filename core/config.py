"""The one configuration object that travels with a model's weights (``config.json``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.json"
ACTIVATIONS = ("relu", "swish")  # max(0, x) as in the paper; x * sigmoid(x) (SiLU) as in Marian


@dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of an encoder-decoder Transformer with a joint vocabulary.

    The special token ids are part of the config so that every consumer (training, search, export,
    serving) reads them from one place instead of retyping them. ``bos_id`` is the decoder's first input (our
    models' ``<s>``; an imported Marian model starts from ``<pad>``, so there ``bos_id == pad_id``).
    ``activation`` and ``final_logits_bias`` default to the paper's model (ReLU, no output bias); Marian models
    use ``"swish"`` (SiLU, x * sigmoid(x)) and a bias added to the output logits.
    """

    vocab_size: int
    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0  # on the ReLU output inside the feed-forward network
    pre_norm: bool = False
    max_positions: int = 1024
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3
    activation: str = "relu"  # in the feed-forward network: one of ACTIVATIONS
    final_logits_bias: bool = False  # a bias [vocab_size] added to the output logits (a buffer of the weights)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[field.type]
            if not isinstance(value, expected) or (field.type != "bool" and isinstance(value, bool)):
                raise ValueError(f"{field.name} must be {field.type}, got {value!r}")
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "n_encoder_layers", "n_decoder_layers", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_model % 2:
            raise ValueError(f"d_model ({self.d_model}) must be even for the sinusoidal encoding")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def d_head(self) -> int:
        """Size of one head's queries, keys and values: d_k = d_v = d_model / h."""
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TransformerConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**values)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "TransformerConfig":
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object")
        return cls.from_dict(values)


PRESETS: dict[str, dict] = {
    # Transformer-Tiny as used for Multi30K (e.g. Wu et al., ACL 2021).
    "tiny": dict(d_model=128, n_heads=4, d_ff=256, n_encoder_layers=4, n_decoder_layers=4, dropout=0.3),
    "small": dict(d_model=256, n_heads=4, d_ff=1024, n_encoder_layers=3, n_decoder_layers=3, dropout=0.3),
    # The paper's base model.
    "base": dict(d_model=512, n_heads=8, d_ff=2048, n_encoder_layers=6, n_decoder_layers=6, dropout=0.1),
}
