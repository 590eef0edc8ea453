"""Import a Marian (opus-mt) transformers model as a model folder of ours: load -> validate -> convert -> verify -> write.

    python -m export.from_hf Helsinki-NLP/opus-mt-en-de --out models/opus-mt-en-de [--force]
    python -m export models/opus-mt-en-de          # then the ONNX bundle, as for our own models

SOURCE is a local transformers folder (``config.json``, ``model.safetensors`` or ``pytorch_model.bin``,
``source.spm``, ``target.spm``, ``vocab.json``), or a Hub id where the Hub is reachable. A ``MarianMTModel`` is the
architecture :mod:`core.model` implements (post-norm, sinusoidal positions from 0, embeddings scaled by
sqrt(d_model), one embedding tied to the output projection); what differs is read from its config: SiLU ("swish"),
the ``final_logits_bias``, Marian's special ids (``</s>`` 0, ``<unk>`` 1, ``<pad>`` last and the decoder's start).
Marian lays its positions out as all sines, then all cosines, where we interleave them: the residual dimension is
permuted back (the inverse of :func:`export.hf.residual_permutation`) in every weight that reads or writes it.

The tokenizer becomes a :class:`core.tokenizer.MarianTokenizer` (:func:`marian_tokenizer_spec`) and the generation
config a ``search.json`` (:class:`core.search.SearchRules`: ``bad_words_ids`` of single tokens banned,
``forced_eos_token_id``, ``early_stopping``, ``max_length`` as a fixed limit, float32 scores). Refused, with the
reason: separate or untied vocabularies, unscaled embeddings, positions other than Marian's sinusoids, other
activations, and generation settings our search does not implement (sampling, repetition penalties, n-gram bans,
multi-token bad words, a length penalty other than 1, ...).

Nothing is written unless our search on the converted model, greedy and with the model's beam size, produces the
same tokens as transformers' ``generate`` on the given sentences (one at a time), and the same logits within 1e-4.
The folder's README and metrics.json carry the source's licence (opus-mt: CC-BY-4.0) and provenance.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core.tokenizer import HIDDEN_PREFIX, MARIAN_KEY

from .onnx_export import ExportError

UNIGRAM = 1  # SentencePiece's TrainerSpec.model_type
SILENT_PIECE_TYPES = (2, 3, 5)  # UNKNOWN, CONTROL, UNUSED: SentencePiece never matches them in text
ACTIVATIONS = {"swish": "swish", "silu": "swish", "relu": "relu"}  # transformers' name -> core.config's
DEFAULT_SENTENCES = [
    "A man in an orange hat starring at something.",
    "Two young children are playing in the sand on a sunny beach.",
    "A dog runs.",
    "A group of people stand in front of an igloo while a woman in a red jacket takes a picture of them.",
    "The weather is nice today, isn't it?",
    "Please call me back at 5 o'clock.",
]
LOGIT_TOLERANCE = 1e-4
# generate() options our search does not implement, and the value that means "off"
UNSUPPORTED_GENERATION = {
    "do_sample": False, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0, "min_length": 0, "min_new_tokens": None, "forced_bos_token_id": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "num_beam_groups": 1, "diversity_penalty": 0.0,
    "renormalize_logits": False, "exponential_decay_length_penalty": None, "sequence_bias": None,
    "max_new_tokens": None, "length_penalty": 1.0, "constraints": None, "force_words_ids": None,
}


class UnrepresentableError(ExportError):
    """The source model computes something this project cannot reproduce exactly."""


def marian_tokenizer_spec(source_spm: str | Path, vocab: dict[str, int], *, eos: str = "</s>", unk: str = "<unk>",
                          pad: str = "<pad>") -> dict:
    """The ``tokenizer.json`` of :class:`core.tokenizer.MarianTokenizer` for a source SentencePiece model and Marian's
    shared ``vocab.json`` (token -> id), built with transformers' ``SpmConverter`` (sentencepiece's protobuf only,
    at import time). Refuses what the rebuild cannot reproduce exactly."""
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(Path(source_spm).read_bytes())
    spec, normalizer = proto.trainer_spec, proto.normalizer_spec
    if spec.model_type != UNIGRAM:
        raise UnrepresentableError(f"{source_spm} is not a Unigram SentencePiece model (model_type {spec.model_type})")
    if spec.byte_fallback:
        raise UnrepresentableError(f"{source_spm} uses byte fallback, which the rebuilt tokenizer does not reproduce")
    if not normalizer.escape_whitespaces:
        raise UnrepresentableError(f"{source_spm} keeps spaces unescaped, which the rebuilt tokenizer relies on")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise UnrepresentableError("vocab.json's ids are not 0..V-1, one token each")
    for token in (eos, unk, pad):
        if token not in vocab:
            raise UnrepresentableError(f"vocab.json has no {token}")
    pieces = [(HIDDEN_PREFIX + piece.piece if piece.type in SILENT_PIECE_TYPES else piece.piece, piece.score)
              for piece in proto.pieces]
    built = json.loads(SpmConverter.build_tokenizer_from_spm_proto(proto, pieces).to_str())
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    built[MARIAN_KEY] = {"vocab": tokens, "eos": eos, "unk": unk, "pad": pad}
    return built


def our_config(hf_config, unk_id: int):
    """The :class:`core.config.TransformerConfig` of a ``MarianConfig``, or raise why none computes the same."""
    from core.config import TransformerConfig

    c = hf_config
    refusals = []
    if getattr(c, "model_type", None) != "marian":
        refusals.append(f"model_type is {getattr(c, 'model_type', None)!r}, not 'marian'")
    if (c.decoder_vocab_size or c.vocab_size) != c.vocab_size or not c.share_encoder_decoder_embeddings:
        refusals.append("source and target vocabularies are separate (decoder_vocab_size, "
                        "share_encoder_decoder_embeddings); ours is one joint vocabulary")
    if not getattr(c, "tie_word_embeddings", True):
        refusals.append("the output projection is not tied to the embedding")
    if not c.scale_embedding:
        refusals.append("embeddings are not scaled by sqrt(d_model)")
    if c.encoder_attention_heads != c.decoder_attention_heads or c.encoder_ffn_dim != c.decoder_ffn_dim:
        refusals.append("encoder and decoder layers differ in heads or feed-forward size")
    if c.activation_function not in ACTIVATIONS:
        refusals.append(f"activation {c.activation_function!r} (ours: {', '.join(sorted(ACTIVATIONS))})")
    if not isinstance(c.eos_token_id, int):
        refusals.append(f"eos_token_id {c.eos_token_id!r} is not one token")
    if c.decoder_start_token_id != c.pad_token_id:
        refusals.append(f"the decoder starts from {c.decoder_start_token_id}, not <pad> ({c.pad_token_id})")
    if refusals:
        raise UnrepresentableError("cannot represent this Marian model exactly: " + "; ".join(refusals))
    try:
        return TransformerConfig(
            vocab_size=c.vocab_size, d_model=c.d_model, n_heads=c.encoder_attention_heads, d_ff=c.encoder_ffn_dim,
            n_encoder_layers=c.encoder_layers, n_decoder_layers=c.decoder_layers, dropout=float(c.dropout),
            attention_dropout=float(c.attention_dropout), activation_dropout=float(c.activation_dropout),
            pre_norm=False, max_positions=c.max_position_embeddings, pad_id=c.pad_token_id,
            bos_id=c.decoder_start_token_id, eos_id=c.eos_token_id, unk_id=unk_id,
            activation=ACTIVATIONS[c.activation_function], final_logits_bias=True)
    except ValueError as error:
        raise UnrepresentableError(f"cannot represent this Marian model: {error}") from error


def search_rules(generation_config, config) -> "SearchRules":  # noqa: F821
    """The :class:`core.search.SearchRules` of a transformers ``GenerationConfig``, or raise what it asks for that
    our search does not implement."""
    from core.search import SearchRules

    g = generation_config
    refusals = [f"{name}={getattr(g, name)!r}" for name, off in UNSUPPORTED_GENERATION.items()
                if getattr(g, name, off) not in (off, None) and getattr(g, name, off) != off]
    banned = []
    for words in g.bad_words_ids or []:
        if len(words) != 1:
            refusals.append(f"bad_words_ids entry {words} (only single tokens are banned)")
        else:
            banned.append(int(words[0]))
    forced = g.forced_eos_token_id
    if forced is not None and forced != config.eos_id:
        refusals.append(f"forced_eos_token_id={forced} is not EOS ({config.eos_id})")
    if g.early_stopping not in (True, False):
        refusals.append(f"early_stopping={g.early_stopping!r}")
    if g.eos_token_id not in (None, config.eos_id):
        refusals.append(f"eos_token_id={g.eos_token_id!r} (ours: {config.eos_id})")
    if refusals:
        raise UnrepresentableError("generate() settings our search does not implement: " + ", ".join(refusals))
    return SearchRules(max_length_a=0, max_length_b=max(1, min(g.max_length, config.max_positions) - 1),
                       banned_ids=tuple(sorted(set(banned))), forced_eos=forced is not None,
                       early_stopping=bool(g.early_stopping), float32_scores=True)


def convert(hf_model, config):
    """Our :class:`core.model.Transformer` with the weights of a ``MarianMTModel`` (permuted back to our interleaved
    sines and cosines), or raise UnrepresentableError for weights our model cannot hold (untied embeddings,
    positions that are not Marian's sinusoids)."""
    import torch

    from core.model import Transformer, sinusoidal_encoding

    from .hf import sines_then_cosines

    marian = hf_model.model
    shared = marian.shared.weight
    for name, weight in (("encoder embedding", marian.encoder.embed_tokens.weight),
                         ("decoder embedding", marian.decoder.embed_tokens.weight),
                         ("output projection", hf_model.lm_head.weight)):
        if weight.shape != shared.shape or not torch.equal(weight, shared):
            raise UnrepresentableError(f"the {name} is not the shared embedding (ours ties all three)")
    p = sines_then_cosines(config.d_model)  # HF dimension k is our dimension p[k]
    table = sinusoidal_encoding(config.max_positions, config.d_model)[:, p]
    for stack in (marian.encoder, marian.decoder):
        positions = stack.embed_positions.weight
        if positions.shape != table.shape or not torch.allclose(positions, table, atol=1e-6):
            raise UnrepresentableError("the position embeddings are not Marian's sinusoids")
    model = Transformer(config).eval()

    @torch.no_grad()
    def copy():
        def reads(ours, linear):  # its input is the residual stream: permute its input columns back
            ours.weight[:, p] = linear.weight
            ours.bias.copy_(linear.bias)

        def writes(ours, linear):  # its output joins the residual stream: permute its output rows back
            ours.weight[p] = linear.weight
            ours.bias[p] = linear.bias

        def norm(ours, layer_norm):
            ours.weight[p] = layer_norm.weight
            ours.bias[p] = layer_norm.bias

        def attention(ours, theirs):
            for our_name, hf_name in (("w_q", "q_proj"), ("w_k", "k_proj"), ("w_v", "v_proj")):
                reads(getattr(ours, our_name), getattr(theirs, hf_name))
            writes(ours.w_o, theirs.out_proj)

        def feed_forward(ours, theirs):
            reads(ours.feed_forward.linear_in, theirs.fc1)
            writes(ours.feed_forward.linear_out, theirs.fc2)
            norm(ours.feed_forward_residual.norm, theirs.final_layer_norm)

        model.embedding.weight[:, p] = shared
        model.final_logits_bias.copy_(hf_model.final_logits_bias.reshape(-1))
        for ours, theirs in zip(model.encoder_layers, marian.encoder.layers, strict=True):
            attention(ours.self_attention, theirs.self_attn)
            norm(ours.attention_residual.norm, theirs.self_attn_layer_norm)
            feed_forward(ours, theirs)
        for ours, theirs in zip(model.decoder_layers, marian.decoder.layers, strict=True):
            attention(ours.self_attention, theirs.self_attn)
            norm(ours.self_attention_residual.norm, theirs.self_attn_layer_norm)
            attention(ours.cross_attention, theirs.encoder_attn)
            norm(ours.cross_attention_residual.norm, theirs.encoder_attn_layer_norm)
            feed_forward(ours, theirs)

    copy()
    return model


def generate_tokens(hf_model, hf_tokenizer, sentences: list[str], beam: int, eos_id: int) -> list[list[int]]:
    """transformers' ``generate`` token ids (no start token, cut at EOS), one sentence per call, with the model's
    generation config and ``num_beams=beam``."""
    import torch

    results = []
    with torch.inference_mode():
        for sentence in sentences:
            inputs = hf_tokenizer([sentence], return_tensors="pt")
            row = hf_model.generate(**inputs, num_beams=beam, do_sample=False)[0].tolist()[1:]
            results.append(row[: row.index(eos_id)] if eos_id in row else row)
    return results


def max_logit_difference(model, hf_model, source_ids: list[list[int]], targets: list[list[int]]) -> float:
    """max |logit difference|, teacher-forced on targets (each with the decoder's start first), one sentence at a
    time."""
    import torch

    worst = 0.0
    with torch.inference_mode():
        for source, target in zip(source_ids, targets):
            source_tensor, target_tensor = torch.tensor([source]), torch.tensor([target])
            ours = model(source_tensor, target_tensor)
            theirs = hf_model(input_ids=source_tensor, decoder_input_ids=target_tensor).logits
            worst = max(worst, float((ours - theirs).abs().max()))
    return worst


@dataclass
class ImportReport:
    """What the verification compared: per search, how many token sequences equal transformers' generate()."""

    source: str
    sentences: int
    equal: dict = field(default_factory=dict)  # {"greedy": 6, "beam 4": 6}
    max_logit_difference: float = 0.0
    parameters: int = 0


def load_source(source: str):
    """The MarianMTModel, its MarianTokenizer and the folder their files are in (downloaded for a Hub id)."""
    from transformers import AutoConfig, MarianMTModel, MarianTokenizer

    folder = Path(source)
    if not folder.is_dir() and (folder.is_absolute() or source.startswith(".") or source.count("/") != 1):
        raise ExportError(f"{source} is not a folder (nor a Hub id such as Helsinki-NLP/opus-mt-en-de)")
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(source, allow_patterns=[
                "*.json", "*.spm", "*.safetensors", "*.md", "LICENSE*"]))
        except Exception as error:  # offline, unknown id, ...: one line
            raise ExportError(f"{source} is not a folder, and the Hub could not provide it: {error}") from error
    try:
        hf_config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot read the transformers config of {source}: {error}") from error
    if hf_config.model_type != "marian":
        raise UnrepresentableError(f"{source} is a {hf_config.model_type!r} model; this importer reads Marian models")
    for name in ("source.spm", "target.spm", "vocab.json"):
        if not (folder / name).is_file():
            raise UnrepresentableError(f"{source} has no {name} (a separate target vocabulary, target_vocab.json, "
                                       "is not supported either)" if name == "vocab.json" else f"{source} has no {name}")
    if (folder / "target_vocab.json").is_file():
        raise UnrepresentableError(f"{source} has separate source and target vocabularies (target_vocab.json)")
    try:
        hf_model = MarianMTModel.from_pretrained(folder).eval()
        hf_tokenizer = MarianTokenizer.from_pretrained(folder, split_special_tokens=True)  # a typed </s> is text
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot load {source}: {error}") from error
    return hf_model, hf_tokenizer, folder


def provenance(source: str, folder: Path) -> dict:
    """The source's name, licence (its model card's front matter, else unknown) and files."""
    licence = None
    card = folder / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            for line in text.split("---", 2)[1].splitlines():
                if line.strip().lower().startswith("license:"):
                    licence = line.split(":", 1)[1].strip().strip("'\"")
    return {"source": source, "license": licence or "unknown (the source has no licence in its model card)",
            "source_files": sorted(p.name for p in folder.iterdir() if p.is_file())}


def model_readme(name: str, config, rules, report: ImportReport, origin: dict, languages: dict) -> str:
    licence = origin["license"]
    pair = f"{languages.get('source') or '?'} -> {languages.get('target') or '?'}"
    equal = ", ".join(f"{search} {count}/{report.sentences}" for search, count in report.equal.items())
    return f"""# {name}

Imported with `python -m export.from_hf {origin['source']}` from a transformers `MarianMTModel` ({pair}); not
trained by this project. Translate, inspect and serve it as any model folder here (`python -m export`, `serve`,
`python -m demo --model`).

## Licence and provenance

- Source: `{origin['source']}` (files: {', '.join(origin['source_files'])})
- Licence of the weights: **{licence}**. The weights and tokenizer are the source's; keep its licence and
  attribution (opus-mt models: CC-BY-4.0, by the Language Technology Research Group at the University of Helsinki,
  trained on OPUS data) when you share this folder or anything built from it. This project's code is MIT.

## What the import checked

- {report.parameters:,} parameters; d_model {config.d_model}, {config.n_encoder_layers}+{config.n_decoder_layers}
  layers, {config.n_heads} heads, feed-forward {config.d_ff}, vocabulary {config.vocab_size:,}, activation
  {config.activation}, output bias.
- Tokens equal to transformers' `generate` on {report.sentences} sentences: {equal}; max |logit difference|
  {report.max_logit_difference:.2e}.
- Search (`search.json`): {json.dumps(rules.to_dict())}.
- A typed `</s>` is text here (transformers' `MarianTokenizer` reads it as the end token unless
  `split_special_tokens=True`).
"""


def import_marian(source: str, out: str | Path, *, force: bool = False, sentences: list[str] | None = None,
                  beams: tuple[int, ...] | None = None, source_lang: str | None = None,
                  target_lang: str | None = None) -> ImportReport:
    """Write the model folder of a Marian model (config.json, model.safetensors, tokenizer.json, search.json,
    README.md, metrics.json) to out, verified first: greedy and beam tokens (``beams``, default 1 and the model's
    num_beams) equal to transformers' ``generate`` on ``sentences``. Refuses an existing out without ``force``."""
    from core.decoding import TorchBackend
    from core.search import translate
    from core.tokenizer import MarianTokenizer

    from .onnx_export import staged

    out = Path(out)
    sentences = sentences or DEFAULT_SENTENCES
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to overwrite it")
    hf_model, hf_tokenizer, folder = load_source(source)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    tokenizer = MarianTokenizer(marian_tokenizer_spec(
        folder / "source.spm", vocab, eos=str(hf_tokenizer.eos_token), unk=str(hf_tokenizer.unk_token),
        pad=str(hf_tokenizer.pad_token)))
    config = our_config(hf_model.config, tokenizer.unk_id)
    try:
        tokenizer.check_compatible(config)
    except ValueError as error:
        raise UnrepresentableError(f"the tokenizer does not fit the model: {error}") from error
    rules = search_rules(hf_model.generation_config, config)
    rules.check(config)
    model = convert(hf_model, config)
    beams = beams or tuple(sorted({1, int(hf_model.generation_config.num_beams or 1)}))
    report = ImportReport(source=source, sentences=len(sentences), parameters=model.num_parameters())

    ours_greedy = None
    for beam in beams:
        ours = [t.token_ids for t in translate(TorchBackend(model), tokenizer, sentences, beam_size=beam, rules=rules,
                                               batch_size=1)]
        theirs = generate_tokens(hf_model, hf_tokenizer, sentences, beam, config.eos_id)
        name = "greedy" if beam == 1 else f"beam {beam}"
        report.equal[name] = sum(a == b for a, b in zip(ours, theirs))
        for sentence, a, b in zip(sentences, ours, theirs):
            if a != b:
                raise ExportError(f"{name} differs from transformers' generate for {sentence!r}: ours "
                                  f"{tokenizer.decode(a)!r} {a}, transformers {tokenizer.decode(b)!r} {b}")
        ours_greedy = ours_greedy or ours
    sources = [tokenizer.encode(s) + [config.eos_id] for s in sentences]
    report.max_logit_difference = max_logit_difference(model, hf_model, sources,
                                                        [[config.bos_id] + ids for ids in ours_greedy])
    if report.max_logit_difference > LOGIT_TOLERANCE:
        raise ExportError(f"max |logit difference| {report.max_logit_difference:.2e} between transformers and the "
                          f"imported model exceeds {LOGIT_TOLERANCE:.0e}")

    origin = provenance(source, folder)
    tokenizer_config = {}
    if (folder / "tokenizer_config.json").is_file():
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    languages = {"source": source_lang or tokenizer_config.get("source_lang"),
                 "target": target_lang or tokenizer_config.get("target_lang")}
    with staged(out) as staging:
        model.save_pretrained(staging)
        tokenizer.save(staging)
        rules.save(staging)
        metrics = {"imported": {**origin, "languages": languages, "architecture": "MarianMTModel",
                                "generate_equal": report.equal, "sentences": report.sentences,
                                "max_logit_difference": report.max_logit_difference,
                                "parameters": report.parameters}}
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
        (staging / "README.md").write_text(model_readme(out.name, config, rules, report, origin, languages),
                                           encoding="utf-8")
        for name in ("LICENSE", "LICENSE.txt"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, staging / name)
    return report


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m export.from_hf", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a transformers Marian folder, or a Hub id (Helsinki-NLP/opus-mt-en-de)")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write (e.g. models/opus-mt-en-de)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    parser.add_argument("--sentences", type=Path, help="a text file, one sentence a line, to verify on "
                        "(default: a few built-in sentences)")
    parser.add_argument("--beam", type=int, action="append", help="beam sizes to verify (default: 1 and the "
                        "model's num_beams); repeat for several")
    parser.add_argument("--source-lang", help="source language code (default: the tokenizer config's)")
    parser.add_argument("--target-lang", help="target language code (default: the tokenizer config's)")
    args = parser.parse_args(argv)
    sentences = None
    if args.sentences:
        sentences = [line for line in args.sentences.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        report = import_marian(args.source, args.out, force=args.force, sentences=sentences,
                               beams=tuple(args.beam) if args.beam else None, source_lang=args.source_lang,
                               target_lang=args.target_lang)
    except ExportError as error:
        sys.exit(f"import failed: {error}")
    equal = ", ".join(f"{search} {count}/{report.sentences}" for search, count in report.equal.items())
    print(f"wrote {args.out} ({report.parameters:,} parameters); tokens equal to transformers' generate: {equal}; "
          f"max |logit diff| {report.max_logit_difference:.2e}")


if __name__ == "__main__":
    main()
