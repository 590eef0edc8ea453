"""Export a model folder to a Hugging Face transformers folder: load -> choose the class -> convert -> verify -> write.

    python -m export.hf models/en-de --out build/hf/en-de [--onnx] [--force]

Our two architectures are stock classes, so transformers, Optimum and Transformers.js load the folder with no code of
ours:

- post-norm -> ``MarianMTModel``: the same sinusoid frequencies from position 0, no embedding LayerNorm, embeddings
  scaled by sqrt(d_model). Marian lays out all sines, then all cosines, where we interleave them, so the residual
  dimension is permuted (:func:`residual_permutation`) in every weight that reads or writes the residual stream.
- pre-norm (with its final LayerNorms) -> ``BlenderbotForConditionalGeneration``: learned positions with no offset,
  so our sinusoid table is its position weights.

Both: ReLU, biases of the output projection zero (``final_logits_bias``), the embedding tied to the output
projection, ``decoder_start_token_id`` our BOS. The tokenizer is our ``tokenizer.json`` plus a post-processor that
appends ``</s>``; special tokens stay vocabulary entries only, so a typed ``</s>`` is text (see core.tokenizer).

Nothing is written unless transformers, reloading the staged folder from disk, produces the same tokens as our search
on real sentences, greedy and beam 5, one source per call with our per-source maximum length, and the same logits
(their log-softmax within 2e-5 of its scale, teacher-forced on the padded batch). ``--onnx`` adds
Optimum's ONNX files (``onnx/encoder_model.onnx``, ``onnx/decoder_model_merged.onnx``), exported by Optimum in its
own Python environment (``--optimum-python``) and verified here under onnxruntime with our search, greedy and beam 5.
Needs ``pip install "attention-mt[hf]"``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.config import TransformerConfig
from core.decoding import TorchBackend
from core.model import Transformer, sinusoidal_encoding
from core.search import max_target_length, pad_batch, top_k_tokens, translate
from core.tokenizer import SPECIAL_TOKENS, Tokenizer

from .model_card import METRICS_FILE, model_card
from .onnx_export import PARITY_SENTENCES, SCALED_TOLERANCE, ExportError, log_softmax, scaled_difference, staged

MARIAN, BLENDERBOT = "MarianMTModel", "BlenderbotForConditionalGeneration"
VERIFIED_BEAMS = (1, 5)
ONNX_DIR = "onnx"
OPTIMUM_FILES = ("encoder_model.onnx", "decoder_model_merged.onnx")
OPTIMUM_TASK = "text2text-generation-with-past"


class UnrepresentableError(ExportError):
    """No stock transformers class computes exactly what this model computes."""


def architecture(config: TransformerConfig) -> str:
    """The transformers class that represents config exactly (:data:`MARIAN` or :data:`BLENDERBOT`), or raise why not.

    Post-norm is Marian, pre-norm (always with final LayerNorms) Blenderbot, whatever the sizes; what
    :class:`core.config.TransformerConfig` allows beyond that and the written files cannot say is refused here
    instead of exported approximately.
    """
    ids = (config.pad_id, config.bos_id, config.eos_id, config.unk_id)
    if ids != tuple(range(len(SPECIAL_TOKENS))):
        raise UnrepresentableError(
            f"neither {MARIAN} nor {BLENDERBOT} can represent this model exactly: its special ids (pad, bos, eos, "
            f"unk) are {ids}, but the written tokenizer files declare {SPECIAL_TOKENS} as ids (0, 1, 2, 3)")
    return BLENDERBOT if config.pre_norm else MARIAN


def residual_permutation(config: TransformerConfig) -> Tensor:
    """Index p with HF residual dimension k = our dimension p[k].

    Marian ([0, 2, ..., d-2, 1, 3, ..., d-1]: our interleaved sines and cosines become all sines, then all cosines);
    the identity for Blenderbot, whose learned positions take our table as it is.
    """
    if architecture(config) == BLENDERBOT:
        return torch.arange(config.d_model)
    return sines_then_cosines(config.d_model)


def sines_then_cosines(d_model: int) -> Tensor:
    """[0, 2, ..., d-2, 1, 3, ..., d-1]: Marian's residual dimension k is our dimension p[k]."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])  # [d]


def hf_config(config: TransformerConfig):
    """The transformers config of our config (the architecture from :func:`architecture`)."""
    from transformers import BlenderbotConfig, MarianConfig

    values = dict(
        vocab_size=config.vocab_size, d_model=config.d_model, max_position_embeddings=config.max_positions,
        encoder_layers=config.n_encoder_layers, decoder_layers=config.n_decoder_layers,
        encoder_attention_heads=config.n_heads, decoder_attention_heads=config.n_heads,
        encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff, activation_function="relu",
        dropout=config.dropout, attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout, scale_embedding=True, tie_word_embeddings=True,
        pad_token_id=config.pad_id, bos_token_id=config.bos_id, eos_token_id=config.eos_id,
        decoder_start_token_id=config.bos_id, forced_eos_token_id=None,
    )
    if architecture(config) == MARIAN:
        return MarianConfig(**values, share_encoder_decoder_embeddings=True)
    return BlenderbotConfig(**values, encoder_no_repeat_ngram_size=0)


def generation_config(config: TransformerConfig):
    """generate()'s defaults: our default search (beam 5, length penalty 1, stop at beam_size finished hypotheses).

    ``max_length`` is the decoder's positions: transformers has one global limit where ours is 1.5 n + 10 per
    source (pass ``max_new_tokens`` for that).
    """
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=config.bos_id, bos_token_id=config.bos_id, eos_token_id=config.eos_id,
        pad_token_id=config.pad_id, forced_eos_token_id=None, max_length=config.max_positions, num_beams=5,
        early_stopping=True, length_penalty=1.0,
    )


@torch.no_grad()
def convert(model: Transformer):
    """A transformers model with model's weights (an exact copy, permuted for Marian)."""
    import transformers

    config = model.config
    name = architecture(config)
    hf = getattr(transformers, name)(hf_config(config)).eval()
    p = residual_permutation(config)

    def reads(linear, ours):  # a linear layer whose input is the residual stream: permute its input columns
        linear.weight.copy_(ours.weight[:, p])
        linear.bias.copy_(ours.bias)

    def writes(linear, ours):  # a linear layer whose output joins the residual stream: permute its output rows
        linear.weight.copy_(ours.weight[p])
        linear.bias.copy_(ours.bias[p])

    def norm(layer_norm, ours):
        layer_norm.weight.copy_(ours.weight[p])
        layer_norm.bias.copy_(ours.bias[p])

    def attention(hf_attention, ours):
        for hf_name, our_name in (("q_proj", "w_q"), ("k_proj", "w_k"), ("v_proj", "w_v")):
            reads(getattr(hf_attention, hf_name), getattr(ours, our_name))
        writes(hf_attention.out_proj, ours.w_o)

    def feed_forward(hf_layer, ours):
        reads(hf_layer.fc1, ours.feed_forward.linear_in)
        writes(hf_layer.fc2, ours.feed_forward.linear_out)
        norm(hf_layer.final_layer_norm, ours.feed_forward_residual.norm)

    hf.model.shared.weight.copy_(model.embedding.weight[:, p])  # tied: both embed_tokens and lm_head
    table = sinusoidal_encoding(config.max_positions, config.d_model)[:, p]  # [positions, d_model]
    for stack in (hf.model.encoder, hf.model.decoder):
        stack.embed_positions.weight.copy_(table)  # Marian recomputes its own on loading: the verification checks it
    for hf_layer, ours in zip(hf.model.encoder.layers, model.encoder_layers):
        attention(hf_layer.self_attn, ours.self_attention)
        norm(hf_layer.self_attn_layer_norm, ours.attention_residual.norm)
        feed_forward(hf_layer, ours)
    for hf_layer, ours in zip(hf.model.decoder.layers, model.decoder_layers):
        attention(hf_layer.self_attn, ours.self_attention)
        norm(hf_layer.self_attn_layer_norm, ours.self_attention_residual.norm)
        attention(hf_layer.encoder_attn, ours.cross_attention)
        norm(hf_layer.encoder_attn_layer_norm, ours.cross_attention_residual.norm)
        feed_forward(hf_layer, ours)
    if name == BLENDERBOT:
        norm(hf.model.encoder.layer_norm, model.encoder_norm)
        norm(hf.model.decoder.layer_norm, model.decoder_norm)
    hf.final_logits_bias.zero_()
    return hf


def write_tokenizer(tokenizer: Tokenizer, config: TransformerConfig, directory: Path) -> None:
    """Our tokenizer.json with a ``$A </s>`` post-processor, tokenizer_config.json and special_tokens_map.json.

    Written by hand, not through transformers' save_pretrained, which would add the special tokens to
    ``added_tokens`` (a typed ``</s>`` would become the real one again for every other reader of the file).
    """
    path = tokenizer.save(directory)
    spec = json.loads(path.read_text(encoding="utf-8"))
    eos = SPECIAL_TOKENS[config.eos_id]
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}},
                 {"SpecialToken": {"id": eos, "type_id": 0}}],
        "special_tokens": {eos: {"id": eos, "ids": [config.eos_id], "tokens": [eos]}},
    }
    path.write_text(json.dumps(spec, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    special = dict(zip(("pad_token", "bos_token", "eos_token", "unk_token"), SPECIAL_TOKENS))
    # transformers adds the named special tokens to the backend on loading; split_special_tokens keeps a typed one
    # text (the library's own switch for exactly this), and tokenizer.json itself still has no added_tokens
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.max_positions - 1,
                        "clean_up_tokenization_spaces": False, "padding_side": "right", "split_special_tokens": True,
                        **special}
    for name, values in (("tokenizer_config.json", tokenizer_config), ("special_tokens_map.json", special)):
        (directory / name).write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")


def reference_tokens(model: Transformer, tokenizer: Tokenizer, sentences: list[str], beam: int) -> list[list[int]]:
    """Our search's token ids (no BOS or EOS) for each sentence."""
    return [t.token_ids for t in translate(TorchBackend(model), tokenizer, sentences, beam_size=beam)]


@torch.inference_mode()
def generate_tokens(hf_model, hf_tokenizer, sentences: list[str], beam: int, config: TransformerConfig,
                    batch_size: int = 32) -> list[list[int]]:
    """transformers' generate() token ids (no start token, cut at EOS) with our search's settings.

    Sentences are batched by equal maximum length (our 1.5 n + 10 new tokens), so every source gets our
    per-source limit even though transformers' limit is per call.
    """
    lengths = [max_target_length(len(ids), config) for ids in hf_tokenizer(sentences)["input_ids"]]
    results: list[list[int]] = [[] for _ in sentences]
    by_length: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        by_length.setdefault(length, []).append(index)
    for length, indices in sorted(by_length.items()):
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            inputs = hf_tokenizer([sentences[i] for i in chunk], return_tensors="pt", padding=True)
            search = {"num_beams": beam, "early_stopping": True, "length_penalty": 1.0} if beam > 1 else {"num_beams": 1}
            # max_length counts the decoder start token: max_length = length + 1 is max_new_tokens = length
            output = hf_model.generate(**inputs, **search, max_length=length + 1, do_sample=False)
            for i, row in zip(chunk, output.tolist()):
                row = row[1:]  # [decoder_start, tokens..., EOS, pad...] -> tokens..., EOS, pad...
                results[i] = row[: row.index(config.eos_id)] if config.eos_id in row else row
    return results


class OptimumBackend:
    """core.search's :class:`core.search.SearchBackend` over Optimum's encoder_model.onnx and decoder_model_merged.onnx.

    Verifies the exported files with our own search: the first step runs the merged decoder's no-cache branch
    (``use_cache_branch`` false, empty past), later steps its cache branch.
    """

    def __init__(self, directory: Path, config: TransformerConfig, max_beam_size: int = 16) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        self.encoder, self.decoder = (onnxruntime.InferenceSession(str(directory / name), options,
                                                                    providers=["CPUExecutionProvider"])
                                      for name in OPTIMUM_FILES)
        self.config = config
        self.max_beam_size = max_beam_size
        self.past_names = [i.name for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.output_names = [output.name for output in self.decoder.get_outputs()]

    def start(self, source_ids: np.ndarray, head_mask=None) -> dict:
        if head_mask is not None:
            raise ValueError("Optimum's graphs cannot switch heads off")
        mask = (source_ids != self.config.pad_id).astype(np.int64)  # [B, S]
        (hidden,) = self.encoder.run(["last_hidden_state"], {"input_ids": source_ids, "attention_mask": mask})
        batch, heads, d_head = len(source_ids), self.config.n_heads, self.config.d_head
        empty = np.zeros((batch, heads, 0, d_head), dtype=np.float32)  # [B, H, 0, d_head]: nothing cached yet
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": mask,
                "past": {name: empty for name in self.past_names}, "first": True}

    def step(self, last_tokens: np.ndarray, state: dict, k: int):
        feeds = {"input_ids": last_tokens[:, None],  # [N] -> [N, 1]: one new token per row
                 "encoder_hidden_states": state["encoder_hidden_states"],
                 "encoder_attention_mask": state["encoder_attention_mask"],
                 "use_cache_branch": np.array([not state["first"]]), **state["past"]}
        outputs = dict(zip(self.output_names, self.decoder.run(self.output_names, feeds)))
        past = {name: outputs[name.replace("past_key_values.", "present.")] for name in self.past_names}
        if not state["first"]:  # the cache branch passes no new encoder keys/values: keep the first step's
            past.update({name: state["past"][name] for name in self.past_names if ".encoder." in name})
        log_probs = torch.log_softmax(torch.from_numpy(outputs["logits"][:, -1]), dim=-1).numpy()  # [N, 1, V] -> [N, V]
        top_log_probs, top_ids = top_k_tokens(log_probs, k)
        return top_log_probs, top_ids, {**state, "past": past, "first": False}

    def reorder(self, state: dict, index: np.ndarray) -> dict:
        return {"encoder_hidden_states": state["encoder_hidden_states"][index],
                "encoder_attention_mask": state["encoder_attention_mask"][index],
                "past": {name: value[index] for name, value in state["past"].items()}, "first": state["first"]}

    def attend(self, source_ids, decoder_input_ids, head_mask=None):
        raise NotImplementedError("Optimum's graphs return no attention weights")


@dataclass
class HFReport:
    """What the verification compared: sentences, and per engine and beam how many token sequences were equal."""

    architecture: str
    sentences: int
    equal: dict = field(default_factory=dict)  # e.g. {"transformers beam 1": 7, "optimum-onnx beam 5": 7}
    max_log_prob_difference: float = 0.0  # scaled (onnx_export.scaled_difference), teacher-forced on our greedy
    # output, the whole batch at once


def compare(report: HFReport, engine: str, beam: int, ours: list[list[int]], theirs: list[list[int]],
            sentences: list[str], tokenizer: Tokenizer) -> None:
    """Record how many are equal; raise on the first that differs."""
    report.equal[f"{engine} beam {beam}"] = sum(a == b for a, b in zip(ours, theirs))
    for sentence, a, b in zip(sentences, ours, theirs):
        if a != b:
            raise ExportError(f"{engine} beam {beam} differs for {sentence!r}: ours {tokenizer.decode(a)!r}, "
                              f"{engine} {tokenizer.decode(b)!r}")


@torch.inference_mode()
def max_log_prob_difference(model: Transformer, hf_model, tokenizer: Tokenizer, sentences: list[str],
                            greedy: list[list[int]]) -> float:
    """How far transformers' log-softmax of the padded batch, teacher-forced on our greedy tokens, is from ours,
    relative to its scale (:func:`export.onnx_export.scaled_difference`): a check tokens alone can miss."""
    config = model.config
    source_ids = torch.from_numpy(pad_batch([tokenizer.encode(s) + [config.eos_id] for s in sentences], config.pad_id))
    target_ids = torch.from_numpy(pad_batch([[config.bos_id] + ids for ids in greedy], config.eos_id))  # [B, T]
    ours = model(source_ids, target_ids)  # [B, T, V]
    theirs = hf_model(input_ids=source_ids, attention_mask=(source_ids != config.pad_id).long(),
                      decoder_input_ids=target_ids).logits  # [B, T, V]
    return scaled_difference(log_softmax(theirs.numpy()), log_softmax(ours.numpy()))


def export_optimum_onnx(staging: Path, optimum_python: str) -> None:
    """Run Optimum's exporter in its own environment on the staged folder; keep the files Transformers.js loads."""
    with tempfile.TemporaryDirectory(prefix=".optimum-", dir=staging.parent) as scratch:
        command = [optimum_python, "-m", "optimum.exporters.onnx", "--model", str(staging), "--task", OPTIMUM_TASK,
                   scratch]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise ExportError(f"Optimum's export failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
        (staging / ONNX_DIR).mkdir()
        for name in OPTIMUM_FILES:
            shutil.move(str(Path(scratch) / name), str(staging / ONNX_DIR / name))


def read_languages(model_dir: Path, source_lang: str | None, target_lang: str | None) -> dict:
    """The language pair: given, else the ONNX bundle's manifest, else the folder name (``en-de``)."""
    if source_lang and target_lang:
        return {"source": source_lang, "target": target_lang}
    manifest = model_dir / "onnx" / "manifest.json"
    if manifest.is_file():
        languages = json.loads(manifest.read_text(encoding="utf-8")).get("languages")
        if languages:
            return languages
    parts = model_dir.resolve().name.split("-")
    if len(parts) == 2 and all(len(part) == 2 for part in parts):
        return {"source": parts[0], "target": parts[1]}
    raise ExportError("give --source-lang and --target-lang (no manifest or folder name says the language pair)")


def export_hf(model_dir: str | Path, out: str | Path, *, onnx: bool = False, optimum_python: str | None = None,
              force: bool = False, sentences: list[str] | None = None, source_lang: str | None = None,
              target_lang: str | None = None) -> HFReport:
    """Write the transformers folder of model_dir to out (and Optimum's ONNX files with ``onnx``), verified first.

    Refuses an existing out without ``force``, a model no stock class represents exactly, and any difference
    between transformers' (or the ONNX files') greedy and beam-5 tokens and ours on ``sentences``.
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model_dir, out = Path(model_dir), Path(out)
    sentences = sentences or PARITY_SENTENCES
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to overwrite it")
    if onnx and not optimum_python:
        raise ExportError("--onnx needs --optimum-python: a Python with optimum-onnx (see docs/huggingface.md)")
    try:
        config = TransformerConfig.load(model_dir)
        name = architecture(config)
        model = Transformer.from_pretrained(model_dir)
        tokenizer = Tokenizer.load(model_dir)
        tokenizer.check_compatible(model.config)
    except (FileNotFoundError, ValueError) as error:
        raise ExportError(f"cannot load the model folder {model_dir}: {error}") from error
    languages = read_languages(model_dir, source_lang, target_lang)
    metrics_path = model_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}

    with staged(out) as staging:
        hf_model = convert(model)
        hf_model.generation_config = generation_config(config)
        hf_model.save_pretrained(staging)
        config_path = staging / "config.json"
        written = json.loads(config_path.read_text(encoding="utf-8"))
        written["transformers.js_config"] = {"dtype": "fp32"}  # Transformers.js: these files, not *_quantized.onnx
        config_path.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
        write_tokenizer(tokenizer, config, staging)
        (staging / "README.md").write_text(model_card(model_dir.resolve().name, name, config, languages, metrics),
                                           encoding="utf-8")
        if metrics:  # the card's source: every stage, command and val score of the recipe
            shutil.copyfile(metrics_path, staging / METRICS_FILE)

        report = HFReport(architecture=name, sentences=len(sentences))
        reloaded = AutoModelForSeq2SeqLM.from_pretrained(staging).eval()
        hf_tokenizer = AutoTokenizer.from_pretrained(staging)
        for beam in VERIFIED_BEAMS:
            ours = reference_tokens(model, tokenizer, sentences, beam)
            if beam == 1:
                report.max_log_prob_difference = max_log_prob_difference(model, reloaded, tokenizer, sentences, ours)
                if report.max_log_prob_difference > SCALED_TOLERANCE:
                    raise ExportError(f"transformers' log-probabilities differ from our model's by "
                                      f"{report.max_log_prob_difference:.2e} of their scale, more than "
                                      f"{SCALED_TOLERANCE:.0e}")
            compare(report, "transformers", beam, ours,
                    generate_tokens(reloaded, hf_tokenizer, sentences, beam, config, batch_size=1), sentences,
                    tokenizer)
            if onnx:
                if beam == VERIFIED_BEAMS[0]:
                    export_optimum_onnx(staging, optimum_python)
                backend = OptimumBackend(staging / ONNX_DIR, config)
                theirs = [t.token_ids for t in translate(backend, tokenizer, sentences, beam_size=beam)]
                compare(report, "optimum-onnx", beam, ours, theirs, sentences, tokenizer)
    return report


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m export.hf", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="folder with config.json, model.safetensors, tokenizer.json")
    parser.add_argument("--out", type=Path, required=True, help="transformers folder to write")
    parser.add_argument("--onnx", action="store_true",
                        help="also write Optimum's ONNX files in OUT/onnx (for Optimum and Transformers.js)")
    parser.add_argument("--optimum-python", default=None,
                        help="a Python with optimum-onnx, which exports the ONNX files (needed by --onnx)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    parser.add_argument("--source-lang", help="source language code for the model card (default: the bundle's)")
    parser.add_argument("--target-lang", help="target language code for the model card (default: the bundle's)")
    args = parser.parse_args(argv)
    try:
        report = export_hf(args.model_dir, args.out, onnx=args.onnx, optimum_python=args.optimum_python,
                           force=args.force, source_lang=args.source_lang, target_lang=args.target_lang)
    except ExportError as error:
        sys.exit(f"export failed: {error}")
    equal = ", ".join(f"{engine} {count}/{report.sentences}" for engine, count in report.equal.items())
    print(f"wrote {args.out} ({report.architecture}); tokens equal to ours: {equal}; "
          f"log-probabilities within {report.max_log_prob_difference:.1e} of their scale")


if __name__ == "__main__":
    main()
