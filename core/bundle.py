"""The ONNX bundle format (written by ``python -m export``, read by ``serve``), and its onnxruntime search backend.

Torch-free: the exporter and the server both read this module and neither imports the other. onnxruntime is
imported only when a backend is built.

A bundle folder holds ``manifest.json``, ``encoder.onnx`` and ``decoder_step.onnx`` (the search: cross keys/values
once per source, then one step at a time with per-layer caches in and out, log-softmax and top-k inside),
``teacher_forced.onnx`` (encode and decode given tokens at once, with every attention weight and trace; only for
``return_attention``, ``return_trace``, ``target_prefix`` and the export's checks; loaded on first use),
``config.json`` and ``tokenizer.json``; every graph takes head masks (:mod:`core.heads`). The row-wise int8 copies
``encoder.int8.onnx`` and ``decoder_step.int8.onnx`` serve ``precision="int8"``. The graphs hold no weights: each
weight is stored once, in ``weights.bin`` (float32) or ``weights.int8.bin`` (what only the int8 graphs use), as ONNX
external data that every graph reading it points into (the manifest lists each graph's ``weights`` files).
Loading verifies the sha256 of every file it reads against the manifest first.
A calibrated bundle also lists ``confidence.json`` (written by ``python -m serve.calibrate``, added to the manifest
with :func:`add_to_manifest`); a bundle without it translates with ``confidence=None``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.confidence import CONFIDENCE_FILE, ConfidenceModel
from core.config import TransformerConfig
from core.heads import HEAD_KINDS, AttentionTrace, HeadMask, trace_output_names
from core.search import SearchRules
from core.tokenizer import Tokenizer

MANIFEST_FILE = "manifest.json"
BUNDLE_FORMAT = "attention-mt-onnx"
# 2: decoder_step.onnx (per-layer caches, top-k in the graph) is the search's step; 3: every graph takes head masks,
# teacher_forced.onnx (in place of decoder.onnx) returns the attention weights and traces; 4: the step graph takes
# top_k; 5: every weight stored once, in weights.bin and weights.int8.bin (ONNX external data the graphs share)
BUNDLE_FORMAT_VERSION = 5
GRAPHS = ("encoder", "decoder_step", "teacher_forced")
SEARCH_GRAPHS = ("encoder", "decoder_step")  # loaded at start-up; teacher_forced on first use
ENCODER_OUTPUTS = ["cross_keys", "cross_values"]
PRECISIONS = ("float32", "int8")
INT8_GRAPHS = ("encoder", "decoder_step")  # row-wise int8 copies (export/int8.py); teacher_forced.onnx stays float32


class BundleError(RuntimeError):
    """A bundle folder that is missing, incomplete, or whose files do not match their manifest."""


def graph_key(name: str, precision: str) -> str:
    """The manifest's ``graphs`` key of graph ``name`` at ``precision``: "decoder_step" or "decoder_step_int8"."""
    return f"{name}_{precision}" if precision != "float32" and name in INT8_GRAPHS else name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict:
    """A file's entry in the manifest's ``files``: its sha256 and size in bytes."""
    return {"sha256": sha256_of(path), "bytes": path.stat().st_size}


def write_manifest_file(directory: Path, manifest: dict) -> None:
    """Write manifest.json as the exporter always has: indented JSON and a final newline."""
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def add_to_manifest(directory: str | Path, name: str) -> dict:
    """List (or re-list) the bundle file ``name`` in the manifest's ``files`` with its sha256 and bytes, as the
    exporter lists every file it writes; nothing else in the manifest changes. Returns the new manifest."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    manifest["files"][name] = file_entry(directory / name)
    manifest["files"] = dict(sorted(manifest["files"].items()))
    write_manifest_file(directory, manifest)
    return manifest


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
    try:
        search_rules(manifest)
    except ValueError as error:
        raise BundleError(f"{path}: {error}") from error
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"{path} has format_version {manifest.get('format_version')}; this version reads "
                          f"{BUNDLE_FORMAT_VERSION}: export the model again (python -m export MODEL_DIR --force)")
    return manifest


def search_rules(manifest: dict) -> SearchRules:
    """The manifest's ``search`` (:class:`core.search.SearchRules`; a field it leaves out, or a manifest without
    one, has our models' default)."""
    return SearchRules.from_dict(manifest.get("search", {}))


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


def load_confidence(directory: str | Path, manifest: dict) -> ConfidenceModel | None:
    """The bundle's confidence model when its manifest lists ``confidence.json`` (checksum verified), else None."""
    if CONFIDENCE_FILE not in manifest["files"]:
        return None
    verify_checksums(directory, manifest, [CONFIDENCE_FILE])
    try:
        return ConfidenceModel.load(Path(directory) / CONFIDENCE_FILE)
    except ValueError as error:
        raise BundleError(str(error)) from error


@dataclass(frozen=True)
class OnnxState:
    """Decoding state of N rows: source mask [N, S], the decoder's head masks (:class:`core.heads.HeadMask` rows,
    only ``decoder`` and ``cross`` used: [N, layers, heads]) and, per decoder layer, keys/values
    [N, heads, length, d_head].

    ``sentences`` [N] says which source each row decodes: rows of the same source share their cross keys/values, so
    a reorder that keeps every row on its source (a beam step) leaves the cross arrays untouched.
    """

    sentences: np.ndarray
    source_mask: np.ndarray
    head_mask: HeadMask
    self_keys: tuple[np.ndarray, ...]
    self_values: tuple[np.ndarray, ...]
    cross_keys: tuple[np.ndarray, ...]
    cross_values: tuple[np.ndarray, ...]


class OnnxBackend:
    """The bundle's graphs under onnxruntime, as a :class:`core.search.SearchBackend`.

    ``graphs`` maps "encoder", "decoder_step" and "teacher_forced" to their files; ``top_k`` is the most tokens the
    step graph returns per row (its ``top_k`` input; the search asks for 2 x beam_size). ``same_length_batches`` (set
    for int8) keeps sources of different lengths out of one batch: padding a source changes the float rounding of its attention
    sums by ~1e-7, which a row's int8 scale can turn into another token, so without padding a sentence's
    translation never depends on its batch mates.
    """

    def __init__(self, graphs: dict[str, Path], config: TransformerConfig, top_k: int, threads: int = 0,
                 same_length_batches: bool = False) -> None:
        import onnxruntime

        self.config = config
        self.same_length_batches = same_length_batches
        self.top_k = top_k
        self.max_beam_size = top_k // 2
        self.graphs = graphs
        self.options = onnxruntime.SessionOptions()
        if threads:
            self.options.intra_op_num_threads = threads
        # Idle threads sleep instead of spinning: on a small CPU a spinning pool takes the cores that the search
        # loop, the HTTP server and other sessions need (measured here: ~5% less offline speed for ~40% less CPU).
        self.options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.encoder, self.decoder_step = (self.session(name) for name in SEARCH_GRAPHS)
        self.step_outputs = [output.name for output in self.decoder_step.get_outputs()]
        self._teacher_forced_graph = None
        self._teacher_forced_lock = threading.Lock()

    def session(self, name: str):
        """An onnxruntime session of graph ``name``; BundleError when onnxruntime cannot load the file."""
        import onnxruntime

        try:
            return onnxruntime.InferenceSession(str(self.graphs[name]), self.options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types differ between versions
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BundleError(f"{self.graphs[name]} is not a graph onnxruntime can load: {first_line}") from error

    @property
    def teacher_forced_graph(self):
        """The teacher-forced graph's session, loaded on first use (only attention, traces, target prefixes and
        the export's checks need it): the search alone never pays its start-up time or memory."""
        with self._teacher_forced_lock:
            if self._teacher_forced_graph is None:
                self._teacher_forced_graph = self.session("teacher_forced")
            return self._teacher_forced_graph

    @classmethod
    def from_bundle(cls, directory: str | Path, threads: int = 0,
                    precision: str = "float32") -> tuple["OnnxBackend", Tokenizer, dict]:
        """Verify a bundle's checksums, then load its graphs (``precision`` "int8": the row-wise int8 encoder and
        step graphs), tokenizer and manifest."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        directory = Path(directory)
        manifest = load_manifest(directory)
        graphs = manifest["graphs"]
        if any(graph_key(name, precision) not in graphs for name in GRAPHS):
            raise BundleError(f"{directory} has no {precision} graphs: export the model again "
                              "(python -m export MODEL_DIR --force) or translate in float32")
        files = {name: graphs[graph_key(name, precision)]["file"] for name in GRAPHS}
        weights = {file for name in GRAPHS for file in graphs[graph_key(name, precision)]["weights"]}
        verify_checksums(directory, manifest, [*files.values(), *weights, manifest["tokenizer"], "config.json"])
        config = TransformerConfig.from_dict(manifest["config"])
        tokenizer = Tokenizer.load(directory / manifest["tokenizer"])
        tokenizer.check_compatible(config)
        paths = {name: directory / file for name, file in files.items()}
        top_k = graphs[graph_key("decoder_step", precision)]["top_k"]
        return cls(paths, config, top_k, threads, same_length_batches=precision == "int8"), tokenizer, manifest

    def head_mask_rows(self, head_mask: HeadMask | None, count: int) -> HeadMask:
        """``head_mask`` (None: every head on) for ``count`` rows, as the graphs take it."""
        return (head_mask or HeadMask.all_on(self.config)).rows(count)

    def encode(self, source_ids: np.ndarray, head_mask: HeadMask | None = None) -> dict[str, np.ndarray]:
        """Run the encoder graph: cross_keys and cross_values [layers, B, H, S, d_head]."""
        mask = self.head_mask_rows(head_mask, len(source_ids)).encoder
        return dict(zip(ENCODER_OUTPUTS, self.encoder.run(ENCODER_OUTPUTS, {"source_ids": source_ids,
                                                                             "encoder_head_mask": mask})))

    def start(self, source_ids: np.ndarray, head_mask: HeadMask | None = None) -> OnnxState:
        encoded = self.encode(source_ids, head_mask)
        cross_keys, cross_values = encoded["cross_keys"], encoded["cross_values"]  # [layers, B, H, S, d_head]
        empty = tuple(np.zeros(keys.shape[:2] + (0, keys.shape[3]), dtype=keys.dtype) for keys in cross_keys)
        return OnnxState(np.arange(len(source_ids)), source_ids != self.config.pad_id,
                         self.head_mask_rows(head_mask, len(source_ids)), empty, empty, tuple(cross_keys),
                         tuple(cross_values))

    def step(self, last_tokens: np.ndarray, state: OnnxState, k: int) -> tuple[np.ndarray, np.ndarray, OnnxState]:
        if k > self.top_k:
            raise ValueError(f"this bundle's step graph returns at most {self.top_k} tokens per row; beam_size must "
                             f"be at most {self.top_k // 2}")
        inputs = {"target_ids": last_tokens[:, None], "source_mask": state.source_mask,  # [N] -> [N, 1]
                  "decoder_head_mask": state.head_mask.decoder, "cross_head_mask": state.head_mask.cross,
                  "top_k": np.array(k, dtype=np.int64)}
        for layer in range(self.config.n_decoder_layers):
            inputs[f"past_key_{layer}"], inputs[f"past_value_{layer}"] = state.self_keys[layer], state.self_values[layer]
            inputs[f"cross_key_{layer}"] = state.cross_keys[layer]
            inputs[f"cross_value_{layer}"] = state.cross_values[layer]
        top_log_probs, top_ids, *present = self.decoder_step.run(self.step_outputs, inputs)
        state = OnnxState(state.sentences, state.source_mask, state.head_mask, tuple(present[0::2]),
                          tuple(present[1::2]), state.cross_keys, state.cross_values)
        return top_log_probs, top_ids, state

    def teacher_forced(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
                       head_mask: HeadMask | None = None) -> dict[str, np.ndarray]:
        """Every output of the teacher-forced graph for padded sources [B, S] and decoder inputs [B, T]: logits,
        {kind}_attentions and {kind}_trace_{field}."""
        mask = self.head_mask_rows(head_mask, len(source_ids))
        inputs = {"source_ids": source_ids, "target_ids": decoder_input_ids,
                  **{f"{kind}_head_mask": part for kind, part in zip(HEAD_KINDS, mask.parts())}}
        graph = self.teacher_forced_graph
        return dict(zip((output.name for output in graph.get_outputs()), graph.run(None, inputs)))

    def attend(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
               head_mask: HeadMask | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Teacher-forced attention weights: encoder self [L, B, H, S, S], decoder self and cross [L, B, H, T, *]."""
        outputs = self.teacher_forced(source_ids, decoder_input_ids, head_mask)
        return tuple(outputs[f"{kind}_attentions"] for kind in HEAD_KINDS)

    def trace(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
              head_mask: HeadMask | None = None) -> dict[str, AttentionTrace]:
        """Teacher-forced traces of every kind (:data:`core.heads.HEAD_KINDS`), each field [L, B, ...]."""
        outputs = self.teacher_forced(source_ids, decoder_input_ids, head_mask)
        return {kind: AttentionTrace(*(outputs[name] for name in trace_output_names(kind))) for kind in HEAD_KINDS}

    def log_probs(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
                  head_mask: HeadMask | None = None) -> np.ndarray:
        """Teacher-forced next-token log-probabilities [B, T, V] (float32)."""
        logits = self.teacher_forced(source_ids, decoder_input_ids, head_mask)["logits"]  # [B, T, V]
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def reorder(self, state: OnnxState, index: np.ndarray) -> OnnxState:
        sentences = state.sentences[index]
        self_keys, self_values = (tuple(layer[index] for layer in part) for part in (state.self_keys, state.self_values))
        if np.array_equal(sentences, state.sentences):  # beams moved within their sentences: same rows otherwise
            return OnnxState(sentences, state.source_mask, state.head_mask, self_keys, self_values, state.cross_keys,
                             state.cross_values)
        cross_keys, cross_values = (tuple(layer[index] for layer in part) for part in (state.cross_keys,
                                                                                          state.cross_values))
        head_mask = HeadMask(*(part[index] for part in state.head_mask.parts()))
        return OnnxState(sentences, state.source_mask[index], head_mask, self_keys, self_values, cross_keys,
                         cross_values)
