"""Convert a model folder to a CTranslate2 model, for benchmarks: the same weights, run by another engine.

    python -m export.to_ctranslate2 models/en-de [--out DIR] [--quantization int8] [--force]

load -> validate -> build the CTranslate2 spec from our modules (our exact sinusoidal table, pre- or post-norm, the
shared embedding as the output projection, no output bias) -> save -> verify that CTranslate2's greedy tokens equal
ours on the parity sentences, and that its log-probabilities of those tokens (``score_batch``) are ours within the
bundle export's scaled tolerance. Needs ``pip install "attention-mt[bench]"`` (ctranslate2).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from core.decoding import TorchBackend
from core.model import Transformer
from core.config import TransformerConfig
from core.search import max_target_length, translate
from core.tokenizer import Tokenizer

from .onnx_export import PARITY_SENTENCES, ExportError, check_log_probs, load_model_folder, scaled_difference

CTRANSLATE2_DIR = "ctranslate2"


def numpy_of(tensor):
    return tensor.detach().float().numpy()


def set_linear(spec, linear) -> None:
    spec.weight = numpy_of(linear.weight)
    if linear.bias is not None:
        spec.bias = numpy_of(linear.bias)


def set_norm(spec, norm) -> None:
    spec.gamma, spec.beta = numpy_of(norm.weight), numpy_of(norm.bias)


def set_attention(spec, attention, *, self_attention: bool) -> None:
    from ctranslate2.converters import utils
    from ctranslate2.specs import common_spec

    if self_attention:  # CTranslate2 fuses Q, K, V into one linear
        parts = [common_spec.LinearSpec() for _ in range(3)]
        for part, linear in zip(parts, (attention.w_q, attention.w_k, attention.w_v)):
            set_linear(part, linear)
        utils.fuse_linear(spec.linear[0], parts)
    else:  # the query alone, then keys and values fused
        set_linear(spec.linear[0], attention.w_q)
        parts = [common_spec.LinearSpec() for _ in range(2)]
        for part, linear in zip(parts, (attention.w_k, attention.w_v)):
            set_linear(part, linear)
        utils.fuse_linear(spec.linear[1], parts)
    set_linear(spec.linear[-1], attention.w_o)


def set_inputs(spec, model: Transformer) -> None:
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = numpy_of(model.embedding.weight)
    spec.scale_embeddings = math.sqrt(model.config.d_model)
    spec.position_encodings.encodings = numpy_of(model.positional_encoding)  # our table, row 0 = position 0


def ctranslate2_spec(model: Transformer, tokenizer: Tokenizer):
    """The CTranslate2 TransformerSpec holding model's weights."""
    from ctranslate2.specs import common_spec, transformer_spec

    config = model.config
    spec = transformer_spec.TransformerSpec.from_config(
        (config.n_encoder_layers, config.n_decoder_layers), config.n_heads, pre_norm=config.pre_norm,
        activation=common_spec.Activation.RELU)
    set_inputs(spec.encoder, model)
    set_inputs(spec.decoder, model)
    for layer_spec, layer in zip(spec.encoder.layer, model.encoder_layers):
        set_attention(layer_spec.self_attention, layer.self_attention, self_attention=True)
        set_norm(layer_spec.self_attention.layer_norm, layer.attention_residual.norm)
        set_linear(layer_spec.ffn.linear_0, layer.feed_forward.linear_in)
        set_linear(layer_spec.ffn.linear_1, layer.feed_forward.linear_out)
        set_norm(layer_spec.ffn.layer_norm, layer.feed_forward_residual.norm)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder_layers):
        set_attention(layer_spec.self_attention, layer.self_attention, self_attention=True)
        set_norm(layer_spec.self_attention.layer_norm, layer.self_attention_residual.norm)
        set_attention(layer_spec.attention, layer.cross_attention, self_attention=False)
        set_norm(layer_spec.attention.layer_norm, layer.cross_attention_residual.norm)
        set_linear(layer_spec.ffn.linear_0, layer.feed_forward.linear_in)
        set_linear(layer_spec.ffn.linear_1, layer.feed_forward.linear_out)
        set_norm(layer_spec.ffn.layer_norm, layer.feed_forward_residual.norm)
    if config.pre_norm:  # post-norm layers already end with their LayerNorm
        set_norm(spec.encoder.layer_norm, model.encoder_norm)
        set_norm(spec.decoder.layer_norm, model.decoder_norm)
    spec.decoder.projection.weight = numpy_of(model.embedding.weight)  # tied, no bias
    vocabulary = [tokenizer.id_to_token(i) for i in range(config.vocab_size)]
    spec.register_source_vocabulary(vocabulary)
    spec.register_target_vocabulary(vocabulary)
    spec.config.bos_token, spec.config.eos_token, spec.config.unk_token = (
        tokenizer.id_to_token(i) for i in (config.bos_id, config.eos_id, config.unk_id))
    spec.config.decoder_start_token = spec.config.bos_token
    return spec


def source_tokens(tokenizer: Tokenizer, texts: list[str], eos: str) -> list[list[str]]:
    """What CTranslate2 reads: our subword strings and EOS (it adds nothing itself)."""
    return [tokens + [eos] if tokens else [] for tokens in map(tokenizer.tokenize, texts)]


def max_decoding_length(tokens: list[list[str]], config: TransformerConfig) -> int:
    """Our length rule (:func:`core.search.max_target_length`, EOS counted) for the longest source of a batch.

    CTranslate2 takes one limit per batch, so a short sentence batched with a long one may run longer than ours
    would (only for outputs that never produce EOS).
    """
    return max(max_target_length(len(t), config) for t in tokens)


def convert(model_dir: str | Path, out: str | Path | None = None, *, quantization: str | None = None,
            force: bool = False) -> Path:
    """Write model_dir's weights as a CTranslate2 model (default model_dir/ctranslate2[-QUANT]) and verify it."""
    import ctranslate2

    model_dir = Path(model_dir)
    out = Path(out) if out else model_dir / (CTRANSLATE2_DIR + (f"-{quantization}" if quantization else ""))
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to overwrite it")
    model, tokenizer = load_model_folder(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=".ctranslate2-", dir=out.parent if out.parent.exists() else None))
    try:
        spec = ctranslate2_spec(model, tokenizer)
        spec.validate()
        spec.optimize(quantization=quantization)
        spec.save(str(staging))
        if quantization is None:
            verify(staging, model, tokenizer, PARITY_SENTENCES)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(staging), out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def verify(directory: Path, model: Transformer, tokenizer: Tokenizer, sentences: list[str]) -> None:
    """Raise ExportError unless CTranslate2's greedy tokens equal ours on every sentence (each alone, so that each
    has its own length limit), and its log-probability of each of those tokens and the EOS is ours (scaled
    difference within the tolerance: tokens alone can hide a wrong weight)."""
    import ctranslate2

    config = model.config
    eos = tokenizer.id_to_token(config.eos_id)
    engine = ctranslate2.Translator(str(directory), device="cpu", inter_threads=1, intra_threads=1)
    results = [engine.translate_batch([tokens], beam_size=1,
                                      max_decoding_length=max_decoding_length([tokens], config))[0]
               for tokens in source_tokens(tokenizer, sentences, eos)]
    ours = translate(TorchBackend(model), tokenizer, sentences, beam_size=1)
    for sentence, result, reference in zip(sentences, results, ours):
        if result.hypotheses[0] != reference.tokens:
            raise ExportError(f"CTranslate2 and PyTorch disagree on {sentence!r}: {result.hypotheses[0]} vs "
                              f"{reference.tokens}")
    difference = 0.0
    for tokens, reference in zip(source_tokens(tokenizer, sentences, eos), ours):
        if not tokens:
            continue
        scored = engine.score_batch([tokens], [reference.tokens])[0].log_probs  # each target token's, then EOS's
        source = [tokenizer.token_to_id(token) for token in tokens]
        decoder_inputs = [config.bos_id] + reference.token_ids
        with torch.inference_mode():
            logits = model(torch.tensor([source]), torch.tensor([decoder_inputs]))[0]  # [T, V]
        expected = torch.log_softmax(logits.double(), dim=-1)[torch.arange(len(decoder_inputs)),
                                                             reference.token_ids + [config.eos_id]]
        difference = max(difference, scaled_difference(np.array(scored), expected.numpy()))
    check_log_probs("CTranslate2 against torch", difference)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export.to_ctranslate2", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--out", type=Path, help="default: MODEL_DIR/ctranslate2 (or ctranslate2-QUANT)")
    parser.add_argument("--quantization", choices=["int8", "int8_float32", "int16", "float16"], default=None)
    parser.add_argument("--force", action="store_true", help="overwrite an existing folder")
    args = parser.parse_args(argv)
    try:
        out = convert(args.model_dir, args.out, quantization=args.quantization, force=args.force)
    except ExportError as error:
        sys.exit(f"conversion failed: {error}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
