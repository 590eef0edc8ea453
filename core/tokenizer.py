"""Joint source+target BPE tokenizer (Hugging Face ``tokenizers``), saved as ``tokenizer.json`` beside the model.

Normalization, applied before BPE and therefore visible in round trips: Unicode NFC, every run of whitespace
(spaces, tabs, newlines) collapses to one space, and leading/trailing whitespace is removed. Otherwise
``decode(encode(text)) == text``. ASCII, Latin-1, Latin Extended-A and common typographic punctuation are always in
the vocabulary; any other character never seen in training becomes ``<unk>`` and is dropped on decoding.

Special tokens are vocabulary entries only, never "added tokens" that the library would match in raw text: a typed
``</s>`` or ``<pad>`` is ordinary text (``<``, ``/``, ``s``, ``>``), so nobody can end or mask a source by typing.
This lives in ``tokenizer.json`` itself (no ``added_tokens``; a decoder step that drops the special tokens), so every
consumer of the file, in any language, behaves the same.
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
    def load(cls, path: str | Path) -> "Tokenizer":
        """Load tokenizer.json from a file or a model folder."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        try:
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
