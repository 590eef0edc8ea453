"""Load an exported ONNX bundle (see ``python -m export``) and run it as a search backend, without torch.

A bundle folder holds ``manifest.json``, ``encoder.onnx``, ``decoder.onnx`` (optionally ``*.int8.onnx``),
``config.json`` and ``tokenizer.json``. Loading verifies every file's sha256 against the manifest first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.config import TransformerConfig
from core.tokenizer import Tokenizer

MANIFEST_FILE = "manifest.json"
BUNDLE_FORMAT = "attention-mt-onnx"


class BundleError(RuntimeError):
    """A bundle folder that is missing, incomplete, or whose files do not match their manifest."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"no {MANIFEST_FILE} in {directory}: not an exported bundle (run python -m export)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from error
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not an {BUNDLE_FORMAT} manifest")
    return manifest


def verify_checksums(directory: str | Path, manifest: dict, names: Sequence[str] | None = None) -> None:
    """Raise BundleError naming the first listed file that is missing or whose sha256 differs."""
    directory = Path(directory)
    for name, expected in manifest["files"].items():
        if names is not None and name not in names:
            continue
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{path} is listed in the manifest but missing")
        if sha256_of(path) != expected["sha256"]:
            raise BundleError(f"{path} does not match its sha256 in the manifest: the file was changed or corrupted")


@dataclass(frozen=True)
class OnnxState:
    """Decoding state of N rows: source mask [N, S] and the KV cache [layers, N, heads, length, d_head]."""

    source_mask: np.ndarray
    self_keys: np.ndarray
    self_values: np.ndarray
    cross_keys: np.ndarray
    cross_values: np.ndarray


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class OnnxBackend:
    """The encoder and decoder-step graphs under onnxruntime, as a :class:`core.search.SearchBackend`."""

    def __init__(self, encoder_path: Path, decoder_path: Path, config: TransformerConfig, threads: int = 0) -> None:
        import onnxruntime

        self.config = config
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle threads sleep instead of spinning: on a small CPU a spinning pool takes the cores that the search
        # loop, the HTTP server and other sessions need (measured here: ~5% less offline speed for ~40% less CPU).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self.encoder = onnxruntime.InferenceSession(str(encoder_path), options, providers=providers)
        self.decoder = onnxruntime.InferenceSession(str(decoder_path), options, providers=providers)

    @classmethod
    def from_bundle(cls, directory: str | Path, int8: bool = False,
                    threads: int = 0) -> tuple["OnnxBackend", Tokenizer, dict]:
        """Verify a bundle's checksums, then load its graphs (float32 or int8), tokenizer and manifest."""
        directory = Path(directory)
        manifest = load_manifest(directory)
        graphs = manifest["graphs"]
        key = "int8_file" if int8 else "file"
        if int8 and "int8_file" not in graphs["encoder"]:
            raise BundleError(f"{directory} has no int8 graphs (export with --int8)")
        encoder_file, decoder_file = graphs["encoder"][key], graphs["decoder"][key]
        verify_checksums(directory, manifest, [encoder_file, decoder_file, manifest["tokenizer"], "config.json"])
        config = TransformerConfig.from_dict(manifest["config"])
        tokenizer = Tokenizer.load(directory / manifest["tokenizer"])
        tokenizer.check_compatible(config)
        return cls(directory / encoder_file, directory / decoder_file, config, threads), tokenizer, manifest

    def encode(self, source_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Run the encoder graph: memory, cross_keys, cross_values, encoder_attentions."""
        names = [output.name for output in self.encoder.get_outputs()]
        return dict(zip(names, self.encoder.run(None, {"source_ids": source_ids})))

    def decode(self, target_ids: np.ndarray, state: OnnxState) -> dict[str, np.ndarray]:
        """Run the decoder graph: logits, present_self_keys/values, self_attentions, cross_attentions."""
        inputs = {
            "target_ids": target_ids,
            "source_mask": state.source_mask,
            "past_self_keys": state.self_keys,
            "past_self_values": state.self_values,
            "cross_keys": state.cross_keys,
            "cross_values": state.cross_values,
        }
        names = [output.name for output in self.decoder.get_outputs()]
        return dict(zip(names, self.decoder.run(None, inputs)))

    def start(self, source_ids: np.ndarray) -> OnnxState:
        return self.initial_state(source_ids, self.encode(source_ids))

    def initial_state(self, source_ids: np.ndarray, encoded: dict[str, np.ndarray]) -> OnnxState:
        """The state before the first step: the encoder's cross keys/values and an empty self-attention cache."""
        cross_keys = encoded["cross_keys"]
        empty = np.zeros(cross_keys.shape[:3] + (0, cross_keys.shape[4]), dtype=cross_keys.dtype)
        return OnnxState(source_ids != self.config.pad_id, empty, empty, cross_keys, encoded["cross_values"])

    @staticmethod
    def advance(state: OnnxState, outputs: dict[str, np.ndarray]) -> OnnxState:
        """The state after a decoder call: its present self-attention keys/values become the past."""
        return OnnxState(state.source_mask, outputs["present_self_keys"], outputs["present_self_values"],
                         state.cross_keys, state.cross_values)

    def step(self, last_tokens: np.ndarray, state: OnnxState) -> tuple[np.ndarray, OnnxState]:
        outputs = self.decode(last_tokens[:, None], state)  # [N] -> [N, 1]
        return log_softmax(outputs["logits"][:, -1].astype(np.float64)), self.advance(state, outputs)

    def attend(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Teacher-forced attention weights: encoder self [L, B, H, S, S], decoder self and cross [L, B, H, T, *]."""
        encoded = self.encode(source_ids)
        outputs = self.decode(decoder_input_ids, self.initial_state(source_ids, encoded))
        return encoded["encoder_attentions"], outputs["self_attentions"], outputs["cross_attentions"]

    def reorder(self, state: OnnxState, index: np.ndarray) -> OnnxState:
        return OnnxState(
            state.source_mask[index],
            state.self_keys[:, index],
            state.self_values[:, index],
            state.cross_keys[:, index],
            state.cross_values[:, index],
        )
