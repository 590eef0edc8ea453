"""Joint source+target BPE tokenizer (Hugging Face ``tokenizers``), saved as ``tokenizer.json`` beside the model.

Normalization, applied before BPE and therefore visible in round trips: Unicode NFC, every run of whitespace
(spaces, tabs, newlines) collapses to one space, and leading/trailing whitespace is removed. Otherwise
``decode(encode(text)) == text``. ASCII, Latin-1, Latin Extended-A and common typographic punctuation are always in
the vocabulary; any other character never seen in training becomes ``<unk>`` and is dropped on decoding.

Special tokens are vocabulary entries only, never "added tokens" that the library would match in raw text: a typed
``</s>`` or ``<pad>`` is ordinary text (``<``, ``/``, ``s``, ``>``), so nobody can end or mask a source by typing.
This lives in ``tokenizer.json`` itself (no ``added_tokens``; a decoder step that drops the special tokens), so every
consumer of the file, in any language, behaves the same.

A second kind, :class:`MarianTokenizer`, reads the ``tokenizer.json`` that ``python -m export.from_hf`` writes for an
imported Marian (opus-mt) model: transformers' ``MarianTokenizer`` rebuilt without sentencepiece or transformers
(see that class). :meth:`Tokenizer.load` returns whichever kind the file holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from .config import TransformerConfig

TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3, matching TransformerConfig's defaults
WORD_BOUNDARY = "\u2581"  # "▁" marks a token that starts a word, as in SentencePiece
# Always in the vocabulary, seen in training or not: printable ASCII, Latin-1 and Latin Extended-A letters and
# common typographic punctuation, so ordinary European text never hits <unk>.
BASE_ALPHABET = sorted(
    {chr(c) for c in range(0x21, 0x7F)}
    | {chr(c) for c in range(0xA1, 0x180)}
    | set("\u2013\u2014\u2018\u2019\u201a\u201c\u201d\u201e\u2026\u20ac")
)


def special_tokens_as_vocabulary_only(tokenizer: HFTokenizer) -> HFTokenizer:
    """The same tokenizer with SPECIAL_TOKENS kept in the vocabulary but no longer matched in input text.

    Removes them from ``added_tokens`` (which the library splits out of raw text before normalization) and puts a
    decoder step in front that turns them into nothing, as ``skip_special_tokens`` did. Idempotent.
    """
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [entry for entry in spec.get("added_tokens", []) if entry["content"] not in SPECIAL_TOKENS]
    drop = [{"type": "Replace", "pattern": {"String": token}, "content": ""} for token in SPECIAL_TOKENS]
    decoder = spec["decoder"]
    if decoder and decoder.get("type") == "Sequence" and decoder["decoders"][: len(drop)] == drop:
        return tokenizer
    spec["decoder"] = {"type": "Sequence", "decoders": drop + ([decoder] if decoder else [])}
    return HFTokenizer.from_str(json.dumps(spec))


class Tokenizer:
    """A thin wrapper that fixes the project's normalization and special tokens around a BPE model."""

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self._tokenizer = special_tokens_as_vocabulary_only(tokenizer)
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != expected_id:
                raise ValueError(f"tokenizer must map {token} to id {expected_id}, got {tokenizer.token_to_id(token)}")

    @staticmethod
    def _untrained(vocab_size: int, min_frequency: int) -> tuple[HFTokenizer, trainers.BpeTrainer]:
        tokenizer = HFTokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
        )
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always"),
                pre_tokenizers.Punctuation(behavior="isolated"),  # "Männer," -> "▁Männer" ","
            ]
        )
        tokenizer.decoder = decoders.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=BASE_ALPHABET,
            show_progress=False,
        )
        return tokenizer, trainer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> "Tokenizer":
        """Learn a joint BPE vocabulary from texts (pass source and target sentences together)."""
        tokenizer, trainer = cls._untrained(vocab_size, min_frequency)
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer | MarianTokenizer":
        """Load tokenizer.json from a file or a model folder: a :class:`Tokenizer`, or a :class:`MarianTokenizer`
        when the file holds one."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(spec, dict) and MARIAN_KEY in spec:
                return MarianTokenizer(spec)
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as error:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{path} is not a valid tokenizer file: {error}") from error

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        self._tokenizer.save(str(path))
        return path

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def check_compatible(self, config: TransformerConfig) -> None:
        """Raise if this tokenizer cannot feed a model with config."""
        if self.vocab_size != config.vocab_size:
            raise ValueError(f"tokenizer has {self.vocab_size} tokens but the model expects {config.vocab_size}")
        ids = (config.pad_id, config.bos_id, config.eos_id, config.unk_id)
        if ids != tuple(range(len(SPECIAL_TOKENS))):
            raise ValueError(f"model special ids {ids} differ from the tokenizer's {SPECIAL_TOKENS}")

    def normalize(self, text: str) -> str:
        return self._tokenizer.normalizer.normalize_str(text)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_with_unknown(self, text: str) -> tuple[list[int], list[str], int]:
        """Token ids, token strings and how many characters the model cannot read.

        Those are the code points of the normalized text that the vocabulary lacks (each becomes part of an
        ``<unk>``), invisible ones such as a BOM or a zero-width space included: the count is 0 exactly when no
        ``<unk>`` is in the ids. serve/js counts the same way.
        """
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        if SPECIAL_TOKENS.index("<unk>") not in encoding.ids:  # the usual case: no second pass over the text
            return encoding.ids, encoding.tokens, 0
        unknown = sum(1 for character in self.normalize(text)
                      if character != " " and self.token_to_id(character) is None)
        return encoding.ids, encoding.tokens, unknown

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of text, cut before a word, whose encoding has at most max_tokens tokens.

        Returns text unchanged when it fits. Pre-tokenization splits at spaces, so a prefix ending before a word
        encodes to exactly the tokens before that word; a single word longer than the limit is cut inside.
        """
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= max_tokens:
            return text
        cut = max((i for i in range(1, max_tokens + 1) if encoding.tokens[i].startswith(WORD_BOUNDARY)), default=max_tokens)
        return text[: encoding.offsets[cut][0]].rstrip()

    def tokenize(self, text: str) -> list[str]:
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int]) -> str:
        text = self._tokenizer.decode(list(ids))  # the decoder drops special tokens (see the module docstring)
        return re.sub(" {2,}", " ", text).strip()  # a dropped <unk> word leaves two spaces behind

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        return self._tokenizer.id_to_token(int(token_id))


MARIAN_KEY = "marian"  # the top-level key of a MarianTokenizer's tokenizer.json (not a key of the tokenizers format)
HIDDEN_PREFIX = " "  # renamed SentencePiece control and unknown pieces: normalized text never holds a plain space


class MarianTokenizer:
    """transformers' ``MarianTokenizer`` (a source SentencePiece model and a shared ``vocab.json``), torch-free.

    ``tokenizer.json`` is the ``tokenizers`` rebuild of the *source* SentencePiece model (its normalizer with the
    precompiled character map, its Unigram pieces and scores; ``python -m export.from_hf`` writes it with
    transformers' ``SpmConverter``) plus, under the key ``"marian"``: ``vocab`` (the model's tokens, by id: Marian's
    ``vocab.json``) and the ``eos``, ``unk`` and ``pad`` tokens. SentencePiece never matches its control and unknown
    pieces (``<s>``, ``</s>``, ``<unk>``) in text, so the rebuild names them with a leading space, which no
    normalized text holds.

    Encoding is ``MarianTokenizer``'s with ``split_special_tokens=True`` (our rule: a typed ``</s>`` is text): a
    leading ``>>xx<<`` language token is looked up whole, the rest is segmented by SentencePiece (a run of characters
    it does not know is one piece, its text) and each piece is looked up in the vocabulary, ``<unk>`` when it is
    not there; ``translate`` appends ``</s>``.
    Decoding drops ``</s>``, ``<pad>`` and ``<unk>`` and joins the pieces with ``▁`` as a space, as
    ``MarianTokenizer.decode(ids, skip_special_tokens=True)`` does.
    """

    def __init__(self, spec: dict) -> None:
        spec = dict(spec)
        marian = spec.pop(MARIAN_KEY)
        self._tokenizer = HFTokenizer.from_str(json.dumps(spec))
        self._vocab: list[str] = list(marian["vocab"])
        self._ids = {token: index for index, token in enumerate(self._vocab)}
        self.special_tokens = {name: marian[name] for name in ("eos", "unk", "pad")}
        missing = [token for token in self.special_tokens.values() if token not in self._ids]
        if missing:
            raise ValueError(f"the vocabulary lacks {missing[0]}")
        if len(self._ids) != len(self._vocab):
            raise ValueError("the vocabulary has repeated tokens")
        self.unk_id = self._ids[self.special_tokens["unk"]]
        self._silent = {self._ids[token] for token in self.special_tokens.values()}
        self._spec = {**spec, MARIAN_KEY: marian}

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        path.write_text(json.dumps(self._spec, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def check_compatible(self, config: TransformerConfig) -> None:
        """Raise if this tokenizer cannot feed a model with config (its size, and pad, eos, unk and the decoder's
        start, which is ``<pad>`` in Marian)."""
        if self.vocab_size != config.vocab_size:
            raise ValueError(f"tokenizer has {self.vocab_size} tokens but the model expects {config.vocab_size}")
        ids = {"pad": self._ids[self.special_tokens["pad"]], "eos": self._ids[self.special_tokens["eos"]],
               "unk": self.unk_id}
        ids["bos"] = ids["pad"]
        theirs = {"pad": config.pad_id, "eos": config.eos_id, "unk": config.unk_id, "bos": config.bos_id}
        if ids != theirs:
            raise ValueError(f"model special ids {theirs} differ from the tokenizer's {ids}")

    def normalize(self, text: str) -> str:
        """The text SentencePiece segments (its normalizer; spaces as ``▁``)."""
        return self._tokenizer.normalizer.normalize_str(text)

    @staticmethod
    def split_language_code(text: str) -> tuple[str, str]:
        """A leading ``>>xx<<`` and the rest of text ("" and text when it has none), as MarianTokenizer splits."""
        end = text.find("<<") if text.startswith(">>") else -1
        return (text[: end + 2], text[end + 2 :]) if end != -1 else ("", text)

    def _encode(self, text: str) -> tuple[list[int], list[str], list[tuple[int, int]]]:
        """Ids, SentencePiece pieces and each one's (start, end) in text."""
        code, rest = self.split_language_code(text)
        encoding = self._tokenizer.encode(rest, add_special_tokens=False)
        pieces = encoding.tokens  # the pieces, and an unknown run as its text (as SentencePiece's pieces are)
        ids = [self._ids.get(piece, self.unk_id) for piece in pieces]
        offsets = [(start + len(code), end + len(code)) for start, end in encoding.offsets]
        if code:
            return [self._ids.get(code, self.unk_id)] + ids, [code] + pieces, [(0, len(code))] + offsets
        return ids, pieces, offsets

    def encode(self, text: str) -> list[int]:
        return self._encode(text)[0]

    def encode_with_unknown(self, text: str) -> tuple[list[int], list[str], int]:
        """Token ids, token strings (the vocabulary's) and how many characters the model cannot read: those of the
        pieces that became ``<unk>``, spaces aside."""
        ids, _, offsets = self._encode(text)
        unknown = sum(1 for id_, (start, end) in zip(ids, offsets) if id_ == self.unk_id
                      for character in text[start:end] if not character.isspace())
        return ids, [self._vocab[i] for i in ids], unknown

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of text, cut before a word, whose encoding has at most max_tokens tokens (a single word
        longer than the limit is cut inside); text unchanged when it fits."""
        ids, pieces, offsets = self._encode(text)
        if len(ids) <= max_tokens:
            return text
        cut = max((i for i in range(1, max_tokens + 1) if pieces[i].startswith(WORD_BOUNDARY)), default=max_tokens)
        return text[: offsets[cut][0]].rstrip()

    def tokenize(self, text: str) -> list[str]:
        return [self._vocab[i] for i in self.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [self._vocab[int(i)] for i in ids if int(i) not in self._silent]
        return "".join(pieces).replace(WORD_BOUNDARY, " ").strip()

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def id_to_token(self, token_id: int) -> str:
        return self._vocab[int(token_id)]
