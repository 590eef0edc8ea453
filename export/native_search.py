"""The whole search in one onnxruntime node: a model folder as a ``com.microsoft.BeamSearch`` graph, for benchmarks.

    python -m export.native_search models/en-de [--out FILE] [--force]

load -> validate -> export the two subgraphs onnxruntime's BeamSearch runs for an encoder-decoder (its "T5" layout:
an encoder giving every decoder layer's cross-attention keys/values, a decoder step with int32 ids and mask, raw
logits and per-layer ``past_key_self_i`` / ``past_key_cross_i`` caches) -> one BeamSearch node over them -> verify
that its tokens equal our search's (:func:`core.search.translate` on the PyTorch model) on the parity sentences,
greedy and beam 5, and that the subgraphs' log-softmax, teacher-forced on our greedy tokens, is the PyTorch model's
(within the bundle export's scaled tolerance) -> save. The loop, log-softmax, top-k, beam bookkeeping and cache reordering then run in C++.

It is a measured alternative to serve's Python search loop (``python -m bench`` runs it as "native loop"), not part
of a bundle: the op keeps every row of a batch until the longest is done, takes one maximum length per batch (our
rule for the batch's longest source), keeps beam scores in float32, and returns neither per-token log-probabilities
nor attention. Needs ``pip install "attention-mt[bench]"`` (torch).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from core.config import TransformerConfig
from core.search import max_target_length

from .onnx_export import (PARITY_SENTENCES, ExportError, cache_of, check_log_probs, interleaved, load_model_folder,
                          log_softmax, per_layer, scaled_difference)

NATIVE_SEARCH_FILE = "native_search.onnx"
NATIVE_MODES = {"greedy": 1, "beam 5": 5}  # what the export verifies


def cache_names(kind: str, part: str, layers: int) -> list[str]:
    """["{kind}_key_{part}_0", "{kind}_value_{part}_0", "{kind}_key_{part}_1", ...]: the names BeamSearch expects."""
    return per_layer((f"{kind}_key_{part}", f"{kind}_value_{part}"), layers)


def subgraphs(model, directory: Path) -> tuple[Path, Path]:
    """Export the encoder and decoder subgraphs of BeamSearch's encoder-decoder layout into directory."""
    import torch
    from torch import nn

    layers = model.config.n_decoder_layers

    class Encoder(nn.Module):
        def forward(self, encoder_input_ids, encoder_attention_mask):
            encoded = model.encode(encoder_input_ids.long())
            # The mask is the padding the ids already show; multiplying by it keeps it an input, as the op feeds it.
            memory = encoded.memory * encoder_attention_mask[..., None].to(encoded.memory.dtype)
            cache = model.start_cache(memory)
            return tuple(interleaved(cache.cross_keys, cache.cross_values))

    class Decoder(nn.Module):
        def forward(self, input_ids, encoder_attention_mask, *caches):
            output = model.decode(input_ids.long(), encoder_attention_mask.bool(), cache_of(caches, layers))
            return output.logits, *interleaved(output.cache.self_keys, output.cache.self_values)

    Dim = torch.export.Dim
    rows, source_length, past_length = Dim("rows"), Dim("source_length"), Dim("past_length")
    # Example sizes avoid 0 and 1, which the tracer would specialize on.
    ids, mask = torch.full((2, 5), 5, dtype=torch.int32), torch.ones(2, 5, dtype=torch.int32)
    heads, d_head = model.config.n_heads, model.config.d_head
    encoder_file, decoder_file = directory / "encoder.onnx", directory / "decoder.onnx"
    torch.onnx.export(
        Encoder().eval(), (ids, mask), str(encoder_file), dynamo=True, opset_version=18, external_data=False,
        input_names=["encoder_input_ids", "encoder_attention_mask"],
        output_names=cache_names("present", "cross", layers), verbose=False,
        dynamic_shapes={"encoder_input_ids": {0: rows, 1: source_length},
                        "encoder_attention_mask": {0: rows, 1: source_length}})
    past = [torch.zeros(2, heads, 3, d_head) for _ in range(2 * layers)]
    cross = [torch.zeros(2, heads, 5, d_head) for _ in range(2 * layers)]
    torch.onnx.export(
        Decoder().eval(), (torch.full((2, 1), 5, dtype=torch.int32), mask, *past, *cross), str(decoder_file),
        dynamo=True, opset_version=18, external_data=False, verbose=False,
        input_names=["input_ids", "encoder_attention_mask", *cache_names("past", "self", layers),
                     *cache_names("past", "cross", layers)],
        output_names=["logits", *cache_names("present", "self", layers)],
        dynamic_shapes=({0: rows}, {0: rows, 1: source_length},
                        (*[{0: rows, 2: past_length}] * len(past), *[{0: rows, 2: source_length}] * len(cross))))
    return encoder_file, decoder_file


def beam_search_graph(encoder_file: Path, decoder_file: Path, config: TransformerConfig):
    """One BeamSearch node over the two subgraphs: inputs input_ids and attention_mask int32 [batch, source_length],
    max_length, min_length, num_beams, num_return_sequences (int32 [1]), length_penalty and repetition_penalty (float
    [1]); outputs sequences int32 [batch, returned, max_length] (decoder start token first, padded with pad_id) and
    sequences_scores."""
    import onnx
    from onnx import TensorProto, helper

    encoder, decoder = onnx.load(str(encoder_file)), onnx.load(str(decoder_file))
    step_width = decoder.graph.input[0].type.tensor_type.shape.dim[1]  # one token per step: the op checks for 1
    step_width.ClearField("dim_param")
    step_width.dim_value = 1
    node = helper.make_node(
        "BeamSearch", ["input_ids", "max_length", "min_length", "num_beams", "num_return_sequences", "length_penalty",
                       "repetition_penalty", "", "", "attention_mask"], ["sequences", "sequences_scores"],
        domain="com.microsoft", encoder=encoder.graph, decoder=decoder.graph, model_type=1,  # encoder-decoder
        eos_token_id=config.eos_id, pad_token_id=config.pad_id, decoder_start_token_id=config.bos_id,
        early_stopping=1, no_repeat_ngram_size=0, vocab_size=config.vocab_size)
    scalar = [1]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "source_length"]),
              *(helper.make_tensor_value_info(name, TensorProto.INT32, scalar)
                for name in ("max_length", "min_length", "num_beams", "num_return_sequences")),
              *(helper.make_tensor_value_info(name, TensorProto.FLOAT, scalar)
                for name in ("length_penalty", "repetition_penalty")),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "source_length"])]
    outputs = [helper.make_tensor_value_info("sequences", TensorProto.INT32, ["batch", "returned", "max_length"]),
               helper.make_tensor_value_info("sequences_scores", TensorProto.FLOAT, ["batch", "returned"])]
    graph = helper.make_graph([node], "native_search", inputs, outputs)
    return helper.make_model(graph, ir_version=decoder.ir_version, opset_imports=[
        helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])


class NativeSearch:
    """The BeamSearch graph under onnxruntime: ``search(sources, beam_size)`` -> each source's best token ids."""

    def __init__(self, path: str | Path, config: TransformerConfig, threads: int = 1) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.config = config

    def search(self, sources: list[list[int]], beam_size: int, length_penalty: float = 1.0) -> list[list[int]]:
        """Token ids (no BOS/EOS) of each source's best hypothesis; sources are token ids with EOS (none empty)."""
        if not sources:
            return []
        config = self.config
        width = max(len(source) for source in sources)
        ids = np.full((len(sources), width), config.pad_id, dtype=np.int32)
        for row, source in enumerate(sources):
            ids[row, : len(source)] = source
        # Our length rule for the longest source; the op counts the decoder start token in the length.
        longest = max_target_length(width, config) + 1
        sequences = self.session.run(["sequences"], {
            "input_ids": ids, "attention_mask": (ids != config.pad_id).astype(np.int32),
            "max_length": np.array([longest], np.int32), "min_length": np.array([1], np.int32),
            "num_beams": np.array([beam_size], np.int32), "num_return_sequences": np.array([1], np.int32),
            "length_penalty": np.array([length_penalty], np.float32),
            "repetition_penalty": np.array([1.0], np.float32)})[0]  # [batch, 1, max_length]
        found = []
        for row in sequences[:, 0, 1:].tolist():  # without the decoder start token
            end = row.index(config.eos_id) if config.eos_id in row else len(row)
            found.append([token for token in row[:end] if token != config.pad_id])
        return found


def subgraph_log_prob_difference(encoder_file: Path, decoder_file: Path, model, sources: list[list[int]],
                                 targets: list[list[int]]) -> float:
    """The subgraphs under onnxruntime, step by step with their caches and teacher-forced on ``targets`` (each
    source alone), against the PyTorch model: the largest scaled difference of their log-softmax
    (:func:`export.onnx_export.scaled_difference`). Tokens alone can hide a wrong weight."""
    import onnxruntime
    import torch

    config = model.config
    layers, heads, d_head = config.n_decoder_layers, config.n_heads, config.d_head
    encoder, decoder = (onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                        for path in (encoder_file, decoder_file))
    self_names, cross_names = cache_names("past", "self", layers), cache_names("past", "cross", layers)
    difference = 0.0
    for source, target in zip(sources, targets):
        ids = np.array([source], dtype=np.int32)  # [1, S]
        mask = np.ones_like(ids)
        cross = encoder.run(None, {"encoder_input_ids": ids, "encoder_attention_mask": mask})
        caches = [np.zeros((1, heads, 0, d_head), np.float32) for _ in self_names]
        decoder_inputs = [config.bos_id] + target  # the last step predicts EOS
        found = []
        for token in decoder_inputs:
            logits, *caches = decoder.run(None, {"input_ids": np.array([[token]], np.int32),
                                                 "encoder_attention_mask": mask, **dict(zip(self_names, caches)),
                                                 **dict(zip(cross_names, cross))})
            found.append(logits[:, -1])  # [1, V]
        with torch.inference_mode():
            expected = model(torch.tensor([source]), torch.tensor([decoder_inputs]))[0].numpy()  # [T, V]
        difference = max(difference, scaled_difference(log_softmax(np.concatenate(found)), log_softmax(expected)))
    return difference


def export_native_search(model_dir: str | Path, out: str | Path | None = None, *, force: bool = False) -> Path:
    """Write model_dir's BeamSearch graph (default model_dir/native_search.onnx) after verifying its tokens."""
    from core.decoding import TorchBackend
    from core.search import translate

    model_dir = Path(model_dir)
    out = Path(out) if out else model_dir / NATIVE_SEARCH_FILE
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to overwrite it")
    model, tokenizer = load_model_folder(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=".native-search-"))
    try:
        import onnx

        encoder_file, decoder_file = subgraphs(model, staging)
        graph = beam_search_graph(encoder_file, decoder_file, model.config)
        onnx.save(graph, str(staging / NATIVE_SEARCH_FILE))
        native = NativeSearch(staging / NATIVE_SEARCH_FILE, model.config)
        backend = TorchBackend(model)
        sources = [ids + [model.config.eos_id] for ids in map(tokenizer.encode, PARITY_SENTENCES) if ids]
        greedy = [t.token_ids for t in translate(backend, tokenizer, PARITY_SENTENCES, beam_size=1) if t.source_tokens]
        check_log_probs("the BeamSearch subgraphs against torch",
                        subgraph_log_prob_difference(encoder_file, decoder_file, model, sources, greedy))
        for mode, beam_size in NATIVE_MODES.items():
            ours = [t.token_ids for t in translate(backend, tokenizer, PARITY_SENTENCES, beam_size=beam_size)
                    if t.source_tokens]
            theirs = [native.search([source], beam_size)[0] for source in sources]
            if ours != theirs:
                raise ExportError(f"the BeamSearch graph's {mode} tokens differ from ours on "
                                  f"{sum(a != b for a, b in zip(ours, theirs))} parity sentences")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging / NATIVE_SEARCH_FILE), out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export.native_search", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model folder (config.json, model.safetensors, tokenizer.json)")
    parser.add_argument("--out", help=f"the graph file to write (default MODEL/{NATIVE_SEARCH_FILE})")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    try:
        print(export_native_search(args.model, args.out, force=args.force))
    except ExportError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
