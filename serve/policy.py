"""The one input policy of every surface: what a text may hold, how an over-long one is cut, what a request's work
may cost, and which model translates a language pair.

The HTTP API (:mod:`serve.validation`), the command line and the demo all call these functions; a surface may pass
smaller numbers (the demo reads at most 128 tokens) but never writes the rules again. serve/js applies the same
length rule, read from the bundle's manifest.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from core.search import DEFAULT_RULES, max_target_length, prefix_token_ids
from core.translator import BaseTranslator

from .translator import Translator


@dataclass(frozen=True)
class InputLimits:
    """What one text may be and ask for."""

    max_chars: int = 2000  # characters per text
    max_tokens: int = 256  # source tokens per text (and never more than the model reads)
    max_beams: int = 8
    max_new_tokens: int = 256  # output tokens, EOS included
    max_attention_weights: int = 1_000_000  # attention weights returned per request, every layer and head summed
    max_beam_nodes: int = 50_000  # beam-record nodes returned per request (~80 bytes of JSON each)


class InputError(ValueError):
    """Input a surface must refuse; the message says what is wrong and what would fit."""


@dataclass(frozen=True)
class FittedText:
    """A text within the limits: ``text`` is what will be translated, ``tokens`` its source tokens (EOS not
    counted); ``chars_before`` / ``tokens_before`` are set when it was cut."""

    text: str
    tokens: int
    chars_before: int | None = None
    tokens_before: int | None = None

    @property
    def was_cut(self) -> bool:
        return self.chars_before is not None or self.tokens_before is not None


def bad_character(text: str) -> str | None:
    """The first control character (tab, newline and carriage return are fine) or lone surrogate, described."""
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if (category == "Cc" and char not in "\t\n\r") or category == "Cs":
            kind = "a lone surrogate" if category == "Cs" else "a control character"
            return f"{kind} U+{ord(char):04X} at position {position}"
    return None


def max_source_tokens(translator: BaseTranslator, limits: InputLimits) -> int:
    return min(limits.max_tokens, translator.max_source_tokens)


def fit_text(translator: BaseTranslator, text: str, limits: InputLimits, *, cut: bool) -> FittedText:
    """text within ``limits.max_chars`` and the token limit: cut before a word when ``cut``, else InputError."""
    chars_before = None
    if len(text) > limits.max_chars:
        if not cut:
            raise InputError(f"{len(text)} characters; at most {limits.max_chars}")
        chars_before, text = len(text), text[: limits.max_chars]
    max_tokens = max_source_tokens(translator, limits)
    tokens = len(translator.tokenizer.encode(text))
    if tokens <= max_tokens:
        return FittedText(text, tokens, chars_before)
    if not cut:
        raise InputError(f"{tokens} tokens; at most {max_tokens}")
    text = translator.tokenizer.truncate(text, max_tokens)
    return FittedText(text, len(translator.tokenizer.encode(text)), chars_before, tokens)


def longest_output(translator: BaseTranslator, source: int, max_new_tokens: int | None) -> int:
    """The most target tokens (EOS included) for a source of ``source`` tokens (EOS included), by the model's own
    length rule (its search rules)."""
    rules = getattr(translator, "rules", DEFAULT_RULES)
    return max_target_length(source, translator.config, max_new_tokens, rules.max_length_a, rules.max_length_b)


def search_cost(translator: BaseTranslator, source_tokens: int, beams: int, max_new_tokens: int | None) -> int:
    """A sentence's search work before it starts: beams x (source + the most target tokens), EOS included."""
    source = source_tokens + 1
    return beams * (source + longest_output(translator, source, max_new_tokens))


def attention_weights(translator: BaseTranslator, source_tokens: int, max_new_tokens: int | None) -> int:
    """The most attention weights one translation can return: every layer and head of encoder self-attention
    [S, S], decoder self-attention [T, T] and cross-attention [T, S], with T the most target tokens."""
    if source_tokens == 0:
        return 0
    config, source = translator.config, source_tokens + 1
    target = longest_output(translator, source, max_new_tokens)
    return config.n_heads * (config.n_encoder_layers * source * source
                             + config.n_decoder_layers * (target * target + target * source))


def beam_nodes(translator: BaseTranslator, source_tokens: int, beams: int, max_new_tokens: int | None) -> int:
    """The most nodes one translation's beam record can hold: 2 x beams ranked candidates at every step."""
    if source_tokens == 0:
        return 0
    return 2 * beams * longest_output(translator, source_tokens + 1, max_new_tokens)


def check_prefix(translator: BaseTranslator, prefix: str | Sequence[str] | None, source_tokens: int,
                 limits: InputLimits, max_new_tokens: int | None) -> None:
    """A target prefix (a text or subword tokens) the search can take: known tokens, no bad characters, within
    ``limits.max_chars`` and shorter than the most output tokens of its source; else InputError."""
    if prefix is None:
        return
    text = prefix if isinstance(prefix, str) else "".join(prefix)
    if len(text) > limits.max_chars:
        raise InputError(f"{len(text)} characters; at most {limits.max_chars}")
    problem = bad_character(text)
    if problem:
        raise InputError(f"contains {problem}")
    try:
        ids = prefix_token_ids(translator.tokenizer, translator.config, prefix)
    except ValueError as error:
        raise InputError(str(error)) from None
    longest = longest_output(translator, source_tokens + 1, max_new_tokens)
    if source_tokens and len(ids) >= longest:
        raise InputError(f"{len(ids)} tokens; the translation of this input has at most {longest} (EOS included)")


def find_model(translators: Sequence[Translator], src_lang: str | None, tgt_lang: str | None) -> Translator:
    """The translator of this language pair (either may be None with one model); InputError naming what exists."""
    if (src_lang is None) != (tgt_lang is None):
        raise InputError("give both src_lang and tgt_lang, or neither")
    pairs = ", ".join(f"{t.source_lang}->{t.target_lang}" for t in translators)
    if src_lang is None:
        if len(translators) == 1:
            return translators[0]
        raise InputError(f"this server has {len(translators)} models ({pairs}): give src_lang and tgt_lang")
    for translator in translators:
        if (translator.source_lang, translator.target_lang) == (src_lang, tgt_lang):
            return translator
    raise InputError(f"no model translates {src_lang!r} to {tgt_lang!r}; this server has {pairs}")
