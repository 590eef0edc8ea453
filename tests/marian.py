"""Test helpers for imported Marian models: tiny SentencePiece models trained here, a Marian-style ``vocab.json`` and a
random ``MarianMTModel`` from a ``MarianConfig`` (swish, a non-zero ``final_logits_bias``, ``<pad>`` as decoder start)."""

from __future__ import annotations

import io
import json
from pathlib import Path

CORPUS_EN = [
    "A man in a blue shirt is standing on a ladder cleaning windows.",
    "Two young children are playing on the grass.",
    "A dog runs through the snow.",
    "A woman is riding a bike down the street.",
    "Several people are waiting at a bus stop.",
    "A little girl climbs into a wooden playhouse.",
    "The boy jumps off the rock into the water.",
    "Three men are working on a construction site.",
    "A group of people stand in front of an igloo.",
    "A brown dog is running after the black dog.",
    "Two men are playing chess in a park.",
    "A girl in a pink dress is jumping rope.",
]
CORPUS_DE = [
    "Ein Mann in einem blauen Hemd steht auf einer Leiter und putzt Fenster.",
    "Zwei kleine Kinder spielen auf dem Gras.",
    "Ein Hund läuft durch den Schnee.",
    "Eine Frau fährt mit dem Fahrrad die Straße entlang.",
    "Mehrere Leute warten an einer Bushaltestelle.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "Der Junge springt vom Felsen ins Wasser.",
    "Drei Männer arbeiten auf einer Baustelle.",
    "Eine Gruppe von Menschen steht vor einem Iglu.",
    "Ein brauner Hund rennt hinter dem schwarzen Hund her.",
    "Zwei Männer spielen Schach in einem Park.",
    "Ein Mädchen in einem rosa Kleid springt Seil.",
]
LANGUAGE_TOKEN = ">>de<<"


def train_spm(texts: list[str], vocab_size: int) -> bytes:
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        character_coverage=0.995, hard_vocab_limit=False, minloglevel=2)
    return model.getvalue()


def write_marian_tokenizer(directory: Path, source_texts: list[str], target_texts: list[str],
                           vocab_size: int = 120, drop: int = 3) -> dict[str, int]:
    """source.spm, target.spm and a shared vocab.json (``</s>`` 0, ``<unk>`` 1, the pieces of both sides but the
    ``drop`` last source pieces, ``>>de<<``, ``<pad>`` last), as Marian's converter writes them. Returns the vocab."""
    import sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    pieces = []
    for name, texts in (("source.spm", source_texts), ("target.spm", target_texts)):
        (directory / name).write_bytes(train_spm(texts, vocab_size))
        processor = sentencepiece.SentencePieceProcessor(model_file=str(directory / name))
        side = [processor.id_to_piece(i) for i in range(processor.get_piece_size())
                if not (processor.is_control(i) or processor.is_unknown(i))]
        pieces.append(side[:-drop] if name == "source.spm" else side)  # some source pieces missing from the vocab
    tokens = ["</s>", "<unk>"]
    for piece in pieces[0] + pieces[1] + [LANGUAGE_TOKEN]:
        if piece not in tokens:
            tokens.append(piece)
    vocab = {token: index for index, token in enumerate(tokens + ["<pad>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"source_lang": "en", "target_lang": "de", "model_max_length": 512, "separate_vocabs": False}), encoding="utf-8")
    return vocab


def marian_tokenizer(directory: Path):
    """transformers' MarianTokenizer of a folder written by :func:`write_marian_tokenizer`, with our typed-special-
    token rule (``split_special_tokens``: a typed ``</s>`` is text)."""
    from transformers import MarianTokenizer

    return MarianTokenizer(str(directory / "source.spm"), str(directory / "target.spm"), str(directory / "vocab.json"),
                           source_lang="en", target_lang="de", split_special_tokens=True)


def write_random_marian(directory: Path, vocab: dict[str, int], *, seed: int = 0, max_length: int = 16,
                        num_beams: int = 4, early_stopping: bool = False, eos_bias: float = 3.0, bias_std: float = 0.5,
                        embedding_scale: float = 1.0,
                        **overrides):
    """A random MarianMTModel (swish, a non-zero final_logits_bias, <pad> as decoder start, opus-mt's generation
    config: <pad> banned, EOS forced at max_length) saved with save_pretrained into directory; returns it."""
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    pad = vocab["<pad>"]
    values = dict(vocab_size=len(vocab), d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, activation_function="swish",
                  scale_embedding=True, pad_token_id=pad, eos_token_id=vocab["</s>"], decoder_start_token_id=pad,
                  forced_eos_token_id=vocab["</s>"], max_position_embeddings=64, dropout=0.1, init_std=0.3)
    values.update(overrides)
    torch.manual_seed(seed)
    model = MarianMTModel(MarianConfig(**values)).eval()
    with torch.no_grad():
        model.model.shared.weight.mul_(embedding_scale)  # small logits: the bias and the context both count
        model.final_logits_bias.normal_(0.0, bias_std)
        top = model.final_logits_bias.max()
        model.final_logits_bias[0, vocab["</s>"]] = top + eos_bias  # EOS now and then: beams end at different steps
        model.final_logits_bias[0, pad] = top + 1.0  # <pad> often among the best: banning it matters
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    model.generation_config = GenerationConfig(
        bad_words_ids=[[pad]], forced_eos_token_id=vocab["</s>"], max_length=max_length, num_beams=num_beams,
        decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=vocab["</s>"], early_stopping=early_stopping)
    model.save_pretrained(directory)
    return model
