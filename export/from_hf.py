"""Import a Marian (opus-mt) transformers model as a model folder of ours: load -> validate -> convert -> verify -> write.

    python -m export.from_hf Helsinki-NLP/opus-mt-en-de --out models/opus-mt-en-de [--force]
    python -m export models/opus-mt-en-de          # then the ONNX bundle, as for our own models

(written layer by layer; this module holds the tokenizer's import so far)
"""

from __future__ import annotations

from pathlib import Path

from core.tokenizer import HIDDEN_PREFIX, MARIAN_KEY

from .onnx_export import ExportError

UNIGRAM = 1  # SentencePiece's TrainerSpec.model_type
SILENT_PIECE_TYPES = (2, 3, 5)  # UNKNOWN, CONTROL, UNUSED: SentencePiece never matches them in text


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
    ids = sorted(vocab.values())
    if ids != list(range(len(vocab))):
        raise UnrepresentableError("vocab.json's ids are not 0..V-1, one token each")
    for token in (eos, unk, pad):
        if token not in vocab:
            raise UnrepresentableError(f"vocab.json has no {token}")
    pieces = [(HIDDEN_PREFIX + piece.piece if piece.type in SILENT_PIECE_TYPES else piece.piece, piece.score)
              for piece in proto.pieces]
    tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, pieces)
    import json

    built = json.loads(tokenizer.to_str())
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    built[MARIAN_KEY] = {"vocab": tokens, "eos": eos, "unk": unk, "pad": pad}
    return built
