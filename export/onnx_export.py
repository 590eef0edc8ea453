"""Export a model folder to an ONNX bundle: load -> validate -> export -> verify parity -> write with a manifest.

Graphs (float32 inputs and outputs; dimension names are the ONNX dim_params):

Every graph takes head masks, float [batch, layers, heads] of 1 (head on) and 0 (off): encoder_head_mask,
decoder_head_mask (decoder self-attention), cross_head_mask (see core.heads). All ones is the plain model.

encoder.onnx (the search's encoder)
  in   source_ids          int64 [batch, source_length]            padded with pad_id
       encoder_head_mask
  out  cross_keys          float [dec_layers, batch, heads, source_length, d_head]   (computed once per source)
       cross_values        float [dec_layers, batch, heads, source_length, d_head]

decoder_step.onnx (the search's step: one token per row, per-layer caches, no attention outputs; L = dec_layers)
  in   target_ids          int64 [batch, 1]
       source_mask         bool  [batch, source_length]
       decoder_head_mask, cross_head_mask
       top_k               int64 []               how many tokens to return per row, 1 .. the manifest's top_k
       past_key_0 .. past_key_{L-1}, past_value_0 ..    float [batch, heads, past_length, d_head]  (0 at the first step)
       cross_key_0 .. cross_key_{L-1}, cross_value_0 .. float [batch, heads, source_length, d_head]
  out  top_log_probs       float [batch, top_k]   log-softmax of the next-token logits, the top_k best, best first
       top_ids             int64 [batch, top_k]   their token ids (equal values: lower id first)
       present_key_0, present_value_0, .. (interleaved per layer)  float [batch, heads, past_length + 1, d_head]

encoder.int8.onnx, decoder_step.int8.onnx
  the same inputs and outputs, every linear layer row-wise int8 (export/int8.py); verified against float32 by
  verify_int8 before the manifest lists them

teacher_forced.onnx (encode and decode given targets at once; serves return_attention, return_trace, target_prefix
and the parity checks)
  in   source_ids          int64 [batch, source_length]            padded with pad_id
       target_ids          int64 [batch, target_length]            decoder inputs: BOS, then the tokens
       encoder_head_mask, decoder_head_mask, cross_head_mask
  out  logits              float [batch, target_length, vocab]
       encoder_attentions  float [enc_layers, batch, heads, source_length, source_length]
       decoder_attentions  float [dec_layers, batch, heads, target_length, target_length]
       cross_attentions    float [dec_layers, batch, heads, target_length, source_length]
       {kind}_trace_{field} for kind in encoder, decoder, cross and the fields of core.heads.AttentionTrace:
         inputs [layers, batch, Lq, d_model], queries, heads [layers, batch, heads, Lq, d_head],
         keys, values [layers, batch, heads, Lk, d_head], head_outputs [layers, batch, heads, Lq, d_model]
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from core.decoding import TorchBackend
from core.heads import HEAD_KINDS, HeadMask, trace_output_names
from core.model import KVCache, Transformer
from core.search import SearchRules, pad_batch, translate
from core.tokenizer import TOKENIZER_FILE, Tokenizer
from core.bundle import (BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, ENCODER_OUTPUTS, INT8_GRAPHS, MANIFEST_FILE,
                         OnnxBackend, file_entry, graph_key, write_manifest_file)
from export.int8 import quantize_file
from export.weights import share_weights

ENCODER_FILE, STEP_FILE, TEACHER_FORCED_FILE = "encoder.onnx", "decoder_step.onnx", "teacher_forced.onnx"
GRAPH_FILES = {"encoder": ENCODER_FILE, "decoder_step": STEP_FILE, "teacher_forced": TEACHER_FORCED_FILE}
INT8_FILES = {name: GRAPH_FILES[name].replace(".onnx", ".int8.onnx") for name in INT8_GRAPHS}
WEIGHTS_FILE, INT8_WEIGHTS_FILE = "weights.bin", "weights.int8.bin"  # every graph's weights, once (export/weights.py)
MIN_INT8_AGREEMENT = 0.9  # share of teacher-forced steps whose int8 top-1 token is float32's
MAX_TOP_K = 32  # the most tokens per row the step graph returns: enough for beams up to 16
# Parity tolerances. Float32 rounding grows with the values compared, so log-probabilities and traces are compared
# relative to their scale (:func:`scaled_difference`): a model with logits of std 10 agrees as closely as one with
# std 1. Attention weights are probabilities: compared as they are.
SCALED_TOLERANCE, ATTENTION_TOLERANCE = 2e-5, 1e-5
# Real sentences for the built-in parity check, in the languages of the shipped models; any text works.
PARITY_SENTENCES = [
    "A man in an orange hat starring at something.",
    "Two young children are playing in the sand on a sunny beach.",
    "A dog runs.",
    "A group of people stand in front of an igloo while a woman in a red jacket takes a picture of them.",
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    "Zwei kleine Kinder spielen an einem sonnigen Strand im Sand.",
    "Ein Hund rennt.",
]


class ExportError(RuntimeError):
    """The model folder cannot be exported (missing, malformed, or the output exists)."""


class ParityError(ExportError):
    """onnxruntime does not reproduce PyTorch within the tolerances."""


class EncoderGraph(nn.Module):
    """The search's encoder: every decoder layer's cross-attention keys and values, computed once per source."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, source_ids: Tensor, encoder_head_mask: Tensor) -> tuple[Tensor, Tensor]:
        cache = self.model.start_cache(self.model.encode(source_ids, head_mask=encoder_head_mask).memory)
        return torch.stack(cache.cross_keys), torch.stack(cache.cross_values)


class TeacherForcedGraph(nn.Module):
    """Encode and decode given target tokens at once: logits, every attention weight and every trace."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, source_ids, target_ids, encoder_head_mask, decoder_head_mask, cross_head_mask):
        encoded = self.model.encode(source_ids, output_attentions=True, head_mask=encoder_head_mask,
                                    output_traces=True)
        output = self.model.decode(target_ids, encoded.source_mask, self.model.start_cache(encoded.memory),
                                   output_attentions=True, self_head_mask=decoder_head_mask,
                                   cross_head_mask=cross_head_mask, output_traces=True)
        return (output.logits, encoded.attentions, output.self_attentions, output.cross_attentions,
                *encoded.traces.parts(), *output.self_traces.parts(), *output.cross_traces.parts())


def blocked_top_k(scores: Tensor, k: int, max_k: int, block: int = 32) -> tuple[Tensor, Tensor]:
    """torch.topk(scores, k) of [B, V] rows, best first, reading each score once instead of sorting all of them;
    ``k`` may be a graph input up to ``max_k``.

    Each of the k best scores lies in a block whose maximum is among the k largest block maxima, so a top-k over
    the V / block maxima picks k blocks and a second top-k over their k x block scores finds the k best. In
    onnxruntime this costs about a third of one TopK over all V scores (~2 ns per score whatever k). Equal scores
    may come out in another order than torch.topk's; the search orders equal scores by token id itself.
    """
    rows, width = scores.shape
    if width % block or width // block < max_k:
        return torch.topk(scores, k, dim=-1)
    blocks = width // block
    chosen = scores.reshape(rows, blocks, block).amax(dim=-1).topk(k, dim=-1).indices  # [B, k] block numbers
    flat = (torch.arange(rows, device=scores.device)[:, None] * blocks + chosen).reshape(-1)  # [B * k]
    candidates = scores.reshape(rows * blocks, block)[flat].reshape(rows, k * block)  # [B, k * block]
    values, index = candidates.topk(k, dim=-1)  # [B, k]
    return values, chosen.gather(1, index // block) * block + index % block


class DecoderStepGraph(nn.Module):
    """One search step: the next token's log-softmax, its top_k best (top_k an input, at most max_top_k: TopK's
    cost in onnxruntime grows steeply with k, and a search needs only 2 x beam_size), and each layer's grown
    self-attention cache."""

    def __init__(self, model: Transformer, max_top_k: int) -> None:
        super().__init__()
        self.model = model
        self.max_top_k = max_top_k

    def forward(self, target_ids, source_mask, decoder_head_mask, cross_head_mask, top_k, *caches):
        k = top_k.item()
        torch._check(k >= 1)
        torch._check(k <= self.max_top_k)
        cache = cache_of(caches, self.model.config.n_decoder_layers)
        output = self.model.decode(target_ids, source_mask, cache, self_head_mask=decoder_head_mask,
                                   cross_head_mask=cross_head_mask)
        log_probs = torch.log_softmax(output.logits.squeeze(1), dim=-1)  # [B, 1, V] -> [B, V], no copy
        top_log_probs, top_ids = blocked_top_k(log_probs, k, self.max_top_k)  # [B, top_k], best first
        return top_log_probs, top_ids, *interleaved(output.cache.self_keys, output.cache.self_values)


def cache_of(caches: Sequence[Tensor], layers: int) -> KVCache:
    """The KVCache of a step graph's cache inputs: every layer's self-attention keys and values, then its
    cross-attention ones, each part interleaved per layer (key_0, value_0, key_1, ...)."""
    past, cross = caches[: 2 * layers], caches[2 * layers :]
    return KVCache(past[0::2], past[1::2], cross[0::2], cross[1::2])


def interleaved(keys: Sequence[Tensor], values: Sequence[Tensor]) -> list[Tensor]:
    """[key_0, value_0, key_1, value_1, ...]: the order of the graphs' per-layer cache inputs and outputs."""
    return [tensor for pair in zip(keys, values) for tensor in pair]


HEAD_MASKS = [f"{kind}_head_mask" for kind in HEAD_KINDS]
TEACHER_FORCED_INPUTS = ["source_ids", "target_ids", *HEAD_MASKS]
TEACHER_FORCED_OUTPUTS = ["logits", *(f"{kind}_attentions" for kind in HEAD_KINDS),
                          *(name for kind in HEAD_KINDS for name in trace_output_names(kind))]


def per_layer(names: tuple[str, str], layers: int) -> list[str]:
    """["past_key_0", "past_value_0", "past_key_1", ...] for names ("past_key", "past_value")."""
    return [f"{name}_{layer}" for layer in range(layers) for name in names]


def step_top_k(config) -> int:
    return min(MAX_TOP_K, config.vocab_size)


def name_output_dimension(path: Path, output: str, axis: int, name: str) -> None:
    """Give one output dimension a name, everywhere it occurs in the graph: the exporter calls a length that comes
    from a value (the step graph's top_k input) u0, u1, ..."""
    import onnx

    model = onnx.load(str(path))
    (described,) = [value for value in model.graph.output if value.name == output]
    old = described.type.tensor_type.shape.dim[axis].dim_param
    if not old:  # a fixed size: nothing to name
        return
    for value in [*model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == old:
                dim.dim_param = name
    onnx.save(model, str(path))


def export_graphs(model: Transformer, directory: Path, opset: int) -> None:
    """Write encoder.onnx, decoder_step.onnx and teacher_forced.onnx with dynamic batch, source, target and cache
    lengths."""
    config = model.config
    Dim = torch.export.Dim
    batch, source_length = Dim("batch"), Dim("source_length")
    past_length, target_length = Dim("past_length"), Dim("target_length")
    # Example sizes avoid 0 and 1, which the tracer would specialize on.
    source_ids = torch.full((2, 5), 5, dtype=torch.long)
    # Separate tensors: aliased example inputs would be traced as one and wired to the same graph input.
    masks = {kind: torch.from_numpy(part).clone() for kind, part in zip(HEAD_KINDS, HeadMask.all_on(config).rows(2).parts())}
    per_row = {0: batch}
    torch.onnx.export(
        EncoderGraph(model).eval(), (source_ids, masks["encoder"]), str(directory / ENCODER_FILE), dynamo=True,
        opset_version=opset, input_names=["source_ids", "encoder_head_mask"], output_names=ENCODER_OUTPUTS,
        external_data=False, verbose=False,
        dynamic_shapes={"source_ids": {0: batch, 1: source_length}, "encoder_head_mask": per_row},
    )
    layers, heads, d_head = config.n_decoder_layers, config.n_heads, config.d_head
    past = [torch.zeros(2, heads, 3, d_head) for _ in range(2 * layers)]
    cross = [torch.zeros(2, heads, 5, d_head) for _ in range(2 * layers)]
    past_names, cross_names = per_layer(("past_key", "past_value"), layers), per_layer(("cross_key", "cross_value"), layers)
    torch.onnx.export(
        DecoderStepGraph(model, step_top_k(config)).eval(),
        (torch.full((2, 1), 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool), masks["decoder"],
         masks["cross"], torch.tensor(step_top_k(config)), *past, *cross),
        str(directory / STEP_FILE), dynamo=True, opset_version=opset,
        input_names=["target_ids", "source_mask", "decoder_head_mask", "cross_head_mask", "top_k", *past_names,
                     *cross_names],
        output_names=["top_log_probs", "top_ids", *per_layer(("present_key", "present_value"), layers)],
        external_data=False, verbose=False,
        dynamic_shapes=({0: batch}, {0: batch, 1: source_length}, per_row, per_row, None,  # then the *caches varargs
                        (*[{0: batch, 2: past_length}] * len(past), *[{0: batch, 2: source_length}] * len(cross))),
    )
    name_output_dimension(directory / STEP_FILE, "top_log_probs", 1, "top_k")
    example = (source_ids, torch.full((2, 3), 5, dtype=torch.long), masks["encoder"], masks["decoder"], masks["cross"])
    torch.onnx.export(
        TeacherForcedGraph(model).eval(), example, str(directory / TEACHER_FORCED_FILE), dynamo=True, opset_version=opset,
        input_names=TEACHER_FORCED_INPUTS, output_names=TEACHER_FORCED_OUTPUTS, external_data=False, verbose=False,
        dynamic_shapes={"source_ids": {0: batch, 1: source_length}, "target_ids": {0: batch, 1: target_length},
                        **{name: per_row for name in HEAD_MASKS}},
    )


def graph_io(path: Path) -> dict:
    """Names, dtypes and symbolic shapes of a graph's inputs and outputs, read back from the file."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values):
        return [
            {
                "name": value.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name,
                "shape": [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim],
            }
            for value in values
        ]

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


@dataclass
class ParityReport:
    sentences: int = 0
    greedy_tokens_equal: bool = True
    # scaled differences (:func:`scaled_difference`), within SCALED_TOLERANCE
    max_log_prob_difference: float = 0.0  # teacher_forced.onnx's logits after log-softmax against torch's
    max_step_log_prob_difference: float = 0.0  # decoder_step's top-k log-probabilities against torch's
    max_trace_difference: float = 0.0  # q, K, V, head outputs, sublayer inputs (teacher_forced.onnx's traces)
    max_attention_difference: float = 0.0  # absolute: attention weights are probabilities
    checked_shapes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _max_difference(a: np.ndarray, b: Tensor) -> float:
    return float(np.abs(a - b.detach().cpu().numpy()).max()) if a.size else 0.0


def scaled_difference(found: np.ndarray, expected: np.ndarray) -> float:
    """max |found - expected| divided by expected's largest magnitude (at least 1): how closely two float32
    computations of the same values agree, whatever their scale (compare it with SCALED_TOLERANCE)."""
    found, expected = np.asarray(found, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if not expected.size:
        return 0.0
    return float(np.abs(found - expected).max() / max(1.0, float(np.abs(expected).max())))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis (float64): what the search ranks, unchanged by a constant shift."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def check_log_probs(what: str, difference: float) -> None:
    """Raise ParityError when a scaled log-probability difference exceeds SCALED_TOLERANCE."""
    if difference > SCALED_TOLERANCE:
        raise ParityError(f"{what}: log-probabilities differ by {difference:.2e} of their scale, more than "
                          f"{SCALED_TOLERANCE:.0e}")


@torch.inference_mode()
def verify_parity(model: Transformer, tokenizer: Tokenizer, bundle: Path, sentences: list[str]) -> ParityReport:
    """Greedy tokens must be equal; logits, every step's top-k log-probabilities, attention weights and traces must
    match torch's.

    Runs the batch of all sentences (padded, several lengths) and each sentence alone, through the graphs the search
    uses and the teacher-forced graph, with every head on and with one head off per layer of every kind.
    """
    config = model.config
    runtime = OnnxBackend({name: bundle / file for name, file in GRAPH_FILES.items()}, config, step_top_k(config))
    report = ParityReport(sentences=len(sentences))
    reference = translate(TorchBackend(model), tokenizer, sentences, beam_size=1)
    exported = translate(runtime, tokenizer, sentences, beam_size=1)
    for ref, out in zip(reference, exported):
        if ref.token_ids != out.token_ids:
            raise ParityError(f"greedy tokens differ for {ref.source!r}: torch {ref.text!r}, onnxruntime {out.text!r}")

    encoded_sources = [tokenizer.encode(text) + [config.eos_id] for text in sentences]
    groups = [list(range(len(sentences)))] + [[i] for i in range(len(sentences))]
    torch_backend = TorchBackend(model)
    for head_mask in (None, parity_head_mask(config)):
        for group in groups:
            source_ids = pad_batch([encoded_sources[i] for i in group], config.pad_id)
            targets = [[config.bos_id] + reference[i].token_ids for i in group]
            target_ids = pad_batch(targets, config.eos_id)  # teacher-force torch's greedy output
            compare_teacher_forced(report, runtime, torch_backend, source_ids, target_ids, head_mask)
            compare_steps(report, runtime, torch_backend, source_ids, target_ids, head_mask)
            report.checked_shapes.append({"batch": len(group), "source_length": int(source_ids.shape[1]),
                                          "cache_length": int(target_ids.shape[1]),
                                          "heads_off": len(head_mask.off()) if head_mask else 0})
    check_log_probs("teacher_forced.onnx against torch", report.max_log_prob_difference)
    check_log_probs("decoder_step.onnx's top-k against torch", report.max_step_log_prob_difference)
    if report.max_attention_difference > ATTENTION_TOLERANCE:
        raise ParityError(
            f"max |attention difference| {report.max_attention_difference:.2e} exceeds {ATTENTION_TOLERANCE:.0e}"
        )
    if report.max_trace_difference > SCALED_TOLERANCE:
        raise ParityError(f"traces differ by {report.max_trace_difference:.2e} of their scale, more than "
                          f"{SCALED_TOLERANCE:.0e}")
    return report


def parity_head_mask(config) -> HeadMask:
    """One head off in every layer of every kind (head l mod heads in layer l): the parity checks run with it too."""
    mask = HeadMask.all_on(config)
    for part in mask.parts():
        part[np.arange(len(part)), np.arange(len(part)) % config.n_heads] = 0.0
    return mask


def compare_teacher_forced(report: ParityReport, runtime: OnnxBackend, torch_backend: TorchBackend,
                           source_ids: np.ndarray, target_ids: np.ndarray, head_mask: HeadMask | None) -> None:
    """teacher_forced.onnx against the torch model: logits, every attention weight, every trace."""
    found = runtime.teacher_forced(source_ids, target_ids, head_mask)
    encoded, decoded = torch_backend.teacher_forced(source_ids, target_ids, head_mask, traces=True)
    report.max_log_prob_difference = max(report.max_log_prob_difference, scaled_difference(
        log_softmax(found["logits"]), log_softmax(decoded.logits.numpy())))
    report.max_attention_difference = max(
        report.max_attention_difference,
        *(_max_difference(found[f"{kind}_attentions"], weights) for kind, weights in
          zip(HEAD_KINDS, (encoded.attentions, decoded.self_attentions, decoded.cross_attentions))))
    for kind, trace in zip(HEAD_KINDS, (encoded.traces, decoded.self_traces, decoded.cross_traces)):
        report.max_trace_difference = max(
            report.max_trace_difference,
            *(scaled_difference(found[name], part.numpy()) for name, part in zip(trace_output_names(kind),
                                                                                  trace.parts())))


def compare_steps(report: ParityReport, runtime: OnnxBackend, torch_backend: TorchBackend, source_ids: np.ndarray,
                  target_ids: np.ndarray, head_mask: HeadMask | None) -> None:
    """encoder.onnx and decoder_step.onnx, step by step with their caches, against the torch model's decode: each
    step's top-k log-probabilities must be torch's k best, best first, for k = the largest, 2 x beam 5 and greedy's 2
    in turn."""
    state, torch_state = runtime.start(source_ids, head_mask), torch_backend.start(source_ids, head_mask)
    for position in range(target_ids.shape[1]):
        step_ids = target_ids[:, position : position + 1]
        k = min((runtime.top_k, 10, 2)[position % 3], runtime.top_k)
        top_log_probs, top_ids, state = runtime.step(step_ids[:, 0], state, k)
        if top_ids.shape[1] != k:
            raise ParityError(f"decoder_step returned {top_ids.shape[1]} tokens per row for top_k {k}")
        torch_step = torch_backend.model.decode(torch.from_numpy(step_ids), torch_state.source_mask,
                                                torch_state.cache, self_head_mask=torch_state.self_head_mask,
                                                cross_head_mask=torch_state.cross_head_mask)
        torch_state = replace(torch_state, cache=torch_step.cache)
        torch_log_probs = torch.log_softmax(torch_step.logits[:, -1], dim=-1)  # [B, V]
        kth_best = torch_log_probs.topk(k, dim=-1).values[:, -1].numpy()
        expected = torch_log_probs.gather(1, torch.from_numpy(top_ids)).numpy()  # [B, k]
        scale = max(1.0, float(np.abs(expected).max()))
        report.max_step_log_prob_difference = max(
            report.max_step_log_prob_difference,
            scaled_difference(top_log_probs, expected),
            float(np.max(kth_best - top_log_probs[:, -1])) / scale,  # > 0: the graph missed one of the top k
            float(np.max(np.diff(top_log_probs, axis=1))) / scale,  # > 0: not sorted best first
        )


def write_int8_graphs(bundle: Path) -> dict[str, int]:
    """Write the row-wise int8 copies of the encoder and step graphs (export/int8.py); returns the linear layers
    rewritten per graph."""
    return {name: quantize_file(bundle / GRAPH_FILES[name], bundle / INT8_FILES[name]) for name in INT8_GRAPHS}


def verify_int8(tokenizer: Tokenizer, config, bundle: Path, sentences: list[str],
                min_agreement: float = MIN_INT8_AGREEMENT) -> dict:
    """Check the int8 graphs against the float32 ones before they are written into the manifest.

    Top-1 agreement: float32's greedy translations are teacher-forced through both step graphs, and the share of
    steps whose best token is the same must reach ``min_agreement``. Batch independence: greedy and beam-5 tokens of
    all sentences batched must equal those of each sentence alone, with the int8 backend as serve builds it (batches
    of same-length sources: an int8 row is never padded, see OnnxBackend). Raises ParityError otherwise.
    """
    float32, int8 = (OnnxBackend({name: bundle / file for name, file in files.items()}, config, step_top_k(config),
                                 same_length_batches=same_length)
                     for files, same_length in ((GRAPH_FILES, False), ({**GRAPH_FILES, **INT8_FILES}, True)))
    targets = [t.token_ids + [config.eos_id] for t in translate(float32, tokenizer, sentences, beam_size=1)]
    source_ids = pad_batch([tokenizer.encode(text) + [config.eos_id] for text in sentences], config.pad_id)
    inputs = pad_batch([[config.bos_id] + target[:-1] for target in targets], config.eos_id)  # [B, T]
    float_state, int8_state = float32.start(source_ids), int8.start(source_ids)
    lengths = np.array([len(target) for target in targets])
    agreeing = 0
    for position in range(inputs.shape[1]):
        _, float_ids, float_state = float32.step(inputs[:, position], float_state, 1)  # ids [B, 1]
        _, int8_ids, int8_state = int8.step(inputs[:, position], int8_state, 1)
        agreeing += int(((float_ids[:, 0] == int8_ids[:, 0]) & (position < lengths)).sum())
    agreement = agreeing / int(lengths.sum())
    if agreement < min_agreement:
        raise ParityError(f"int8 top-1 tokens agree with float32 on {agreement:.1%} of the steps, less than "
                          f"{min_agreement:.0%}")
    for beam_size in (1, 5):
        batched = [t.token_ids for t in translate(int8, tokenizer, sentences, beam_size=beam_size)]
        alone = [translate(int8, tokenizer, [text], beam_size=beam_size)[0].token_ids for text in sentences]
        if batched != alone:
            raise ParityError(f"int8 beam-{beam_size} tokens of a sentence depend on its batch mates")
    return {"steps": int(lengths.sum()), "top1_agreement": round(agreement, 4), "batch_independent": True}


def library_versions() -> dict:
    import onnx
    import onnxruntime

    versions = {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__}
    try:
        import onnxscript

        versions["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    return versions


def write_manifest(directory: Path, model: Transformer, opset: int, parity: ParityReport, int8: dict,
                   languages: dict | None, rules: SearchRules, weights: dict[str, list[str]]) -> dict:
    """Write manifest.json; ``rules`` is the model's search settings, ``weights`` lists the weights files each graph
    file reads (:func:`share_weights`)."""
    config = model.config
    graphs = {name: {"file": file, "weights": weights[file], **graph_io(directory / file)}
              for name, file in GRAPH_FILES.items()}
    graphs.update({graph_key(name, "int8"): {"file": file, "precision": "int8", "weights": weights[file],
                                             **graph_io(directory / file)} for name, file in INT8_FILES.items()})
    for key in ("decoder_step", graph_key("decoder_step", "int8")):
        graphs[key]["top_k"] = step_top_k(config)
    files = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "config": config.to_dict(),
        "languages": languages,
        "tokenizer": TOKENIZER_FILE,
        "special_tokens": {"pad": config.pad_id, "bos": config.bos_id, "eos": config.eos_id, "unk": config.unk_id},
        "search": rules.to_dict(),
        "opset": opset,
        "graphs": graphs,
        "parity": {**parity.as_dict(), "int8": int8},
        "versions": library_versions(),
        "files": {name: file_entry(directory / name) for name in files},
    }
    write_manifest_file(directory, manifest)
    return manifest


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to write into; when the block succeeds it replaces ``out``, otherwise it is
    removed and ``out`` stays as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_model_folder(model_dir: Path) -> tuple[Transformer, Tokenizer]:
    """Load and validate a model folder (config.json, model.safetensors, tokenizer.json) for an export, in eval mode;
    ExportError says what is wrong."""
    try:
        model = Transformer.from_pretrained(model_dir).eval()
        tokenizer = Tokenizer.load(model_dir)
        tokenizer.check_compatible(model.config)
    except (FileNotFoundError, ValueError) as error:
        raise ExportError(f"cannot load the model folder {model_dir}: {error}") from error
    return model, tokenizer


def export_bundle(model_dir: str | Path, out: str | Path | None = None, *, opset: int = 18,
                  force: bool = False, sentences: list[str] | None = None, source_lang: str | None = None,
                  target_lang: str | None = None) -> dict:
    """Export model_dir to out (default model_dir/onnx) and return the manifest. Fails loudly on parity errors.

    source_lang/target_lang (e.g. "en", "de") are recorded in the manifest so that servers can pick the bundle by
    language pair; give both or neither.
    """
    import onnx

    model_dir = Path(model_dir)
    out = Path(out) if out is not None else model_dir / "onnx"
    if opset < 17:
        raise ExportError(f"opset must be at least 17, got {opset}")
    if (source_lang is None) != (target_lang is None):
        raise ExportError("give both --source-lang and --target-lang, or neither")
    languages = {"source": source_lang, "target": target_lang} if source_lang else None
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to overwrite it")
    model, tokenizer = load_model_folder(model_dir)
    try:
        rules = SearchRules.load(model_dir)  # the model's search.json, copied into the manifest
        rules.check(model.config)
    except ValueError as error:
        raise ExportError(f"cannot load the model folder {model_dir}: {error}") from error

    with staged(out) as staging:
        export_graphs(model, staging, opset)
        rewritten = write_int8_graphs(staging)
        weights = share_weights(staging, [(WEIGHTS_FILE, list(GRAPH_FILES.values())),
                                          (INT8_WEIGHTS_FILE, list(INT8_FILES.values()))])
        for name in [*GRAPH_FILES.values(), *INT8_FILES.values()]:
            onnx.checker.check_model(str(staging / name), full_check=True)
        tokenizer.save(staging)  # typed special-token strings stay text in every consumer (see core.tokenizer)
        model.config.save(staging)
        parity = verify_parity(model, tokenizer, staging, sentences or PARITY_SENTENCES)
        int8 = {"linear_layers": rewritten, **verify_int8(tokenizer, model.config, staging,
                                                           sentences or PARITY_SENTENCES)}
        manifest = write_manifest(staging, model, opset, parity, int8, languages, rules, weights)
    return manifest
