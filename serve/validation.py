"""The HTTP API's rules: every limit checked before any work, and a refused request named by its field.

:func:`check_request` turns a typed :class:`serve.schemas.TranslationRequest` into a :class:`Job` of clean values
for the batcher, or raises :class:`RequestError`. Knows nothing of FastAPI.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .batcher import Batcher, SearchOptions
from .schemas import GenerateParameters, TranslationParameters, TranslationRequest
from .translator import Translator


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; every limit is checked before any translation work."""

    max_body_bytes: int = 256 * 1024
    body_timeout_s: float = 10.0  # longest wait for the rest of a body (408 after it)
    max_inputs: int = 64  # texts per request
    max_input_chars: int = 2000  # characters per text
    max_input_tokens: int = 256  # source tokens per text (also capped by the model's max_positions)
    max_new_tokens: int = 256  # output tokens, EOS included
    max_beams: int = 8
    max_attention_inputs: int = 4  # texts per request with return_attention
    length_penalty_range: tuple[float, float] = (0.0, 2.0)


class RequestError(Exception):
    """A request the server refuses; becomes a JSON error with this status."""

    def __init__(self, status: int, field: str | None, message: str, error_type: str = "validation",
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.error_type, self.headers = status, field, message, error_type, headers


@dataclass
class Model:
    """A loaded model: its translator and the batcher in front of it."""

    translator: Translator
    batcher: Batcher

    def limits(self, limits: Limits) -> dict:
        return {**asdict(limits), "max_input_tokens": self.max_input_tokens(limits)}

    def max_input_tokens(self, limits: Limits) -> int:
        return min(limits.max_input_tokens, self.translator.max_source_tokens)


@dataclass(frozen=True)
class Job:
    """A checked request: clean values for the batcher."""

    model: Model
    texts: list[str]
    truncated: list[bool] | None  # None unless truncation was asked for
    options: SearchOptions
    return_scores: bool
    return_n_best: bool


def bad_character(text: str) -> str | None:
    """The first control character (tab, newline and carriage return are fine) or lone surrogate, described."""
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if (category == "Cc" and char not in "\t\n\r") or category == "Cs":
            kind = "a lone surrogate" if category == "Cs" else "a control character"
            return f"{kind} U+{ord(char):04X} at position {position}"
    return None


def choose_model(models: Sequence[Model], src_lang: str | None, tgt_lang: str | None) -> Model:
    if (src_lang is None) != (tgt_lang is None):
        field = "parameters.tgt_lang" if tgt_lang is None else "parameters.src_lang"
        raise RequestError(422, field, "give both src_lang and tgt_lang, or neither")
    pairs = ", ".join(f"{m.translator.source_lang}->{m.translator.target_lang}" for m in models)
    if src_lang is None:
        if len(models) == 1:
            return models[0]
        raise RequestError(422, "parameters.src_lang", f"this server has {len(models)} models ({pairs}): "
                                                       "give src_lang and tgt_lang")
    for model in models:
        if (model.translator.source_lang, model.translator.target_lang) == (src_lang, tgt_lang):
            return model
    raise RequestError(422, "parameters.src_lang", f"no model translates {src_lang!r} to {tgt_lang!r}; "
                                                   f"this server has {pairs}")


def check_range(field: str, value, low, high) -> None:
    if not low <= value <= high:
        raise RequestError(422, field, f"must be between {low} and {high}, got {value}")


def check_texts(request: TranslationRequest, limits: Limits) -> list[str]:
    """The request's texts, each within the character limit and free of control characters."""
    texts = [request.inputs] if isinstance(request.inputs, str) else list(request.inputs)
    if not texts:
        raise RequestError(422, "inputs", "must not be an empty list")
    if len(texts) > limits.max_inputs:
        raise RequestError(422, "inputs", f"{len(texts)} texts; at most {limits.max_inputs} per request")
    for index, text in enumerate(texts):
        field = input_field(request, index)
        if len(text) > limits.max_input_chars:
            raise RequestError(422, field, f"{len(text)} characters; at most {limits.max_input_chars}")
        problem = bad_character(text)
        if problem:
            raise RequestError(422, field, f"contains {problem}")
    return texts


def input_field(request: TranslationRequest, index: int) -> str:
    return "inputs" if isinstance(request.inputs, str) else f"inputs[{index}]"


def check_options(parameters: TranslationParameters, texts: list[str], limits: Limits) -> SearchOptions:
    """The search options the request asks for, each within its range."""
    generate = parameters.generate_parameters or GenerateParameters()
    beam_size = 5 if generate.num_beams is None else generate.num_beams
    check_range("parameters.generate_parameters.num_beams", beam_size, 1, limits.max_beams)
    if generate.max_new_tokens is not None:
        check_range("parameters.generate_parameters.max_new_tokens", generate.max_new_tokens, 1, limits.max_new_tokens)
    length_penalty = 1.0 if generate.length_penalty is None else float(generate.length_penalty)
    if not math.isfinite(length_penalty):
        raise RequestError(422, "parameters.generate_parameters.length_penalty", "must be a finite number")
    check_range("parameters.generate_parameters.length_penalty", length_penalty, *limits.length_penalty_range)
    n_best = 1 if parameters.n_best is None else parameters.n_best
    check_range("parameters.n_best", n_best, 1, beam_size)
    if parameters.return_attention and len(texts) > limits.max_attention_inputs:
        raise RequestError(422, "parameters.return_attention",
                           f"attention is returned for at most {limits.max_attention_inputs} inputs, got {len(texts)}")
    return SearchOptions(beam_size=beam_size, length_penalty=length_penalty, max_length=generate.max_new_tokens,
                         n_best=n_best, return_attention=parameters.return_attention)


def check_request(request: TranslationRequest, models: Sequence[Model], limits: Limits) -> Job:
    """Every limit and rule of the API, checked before any work; raises RequestError naming the field."""
    parameters = request.parameters or TranslationParameters()
    texts = check_texts(request, limits)
    model = choose_model(models, parameters.src_lang, parameters.tgt_lang)
    options = check_options(parameters, texts, limits)

    truncate = parameters.truncation not in (None, "do_not_truncate")
    max_tokens = model.max_input_tokens(limits)
    tokenizer = model.translator.tokenizer
    truncated = [False] * len(texts)
    for index, text in enumerate(texts):
        count = len(tokenizer.encode(text))
        if count <= max_tokens:
            continue
        if not truncate:
            raise RequestError(422, input_field(request, index), f"{count} tokens; at most {max_tokens} (or set "
                                                                 "parameters.truncation to 'longest_first' to cut it)")
        texts[index], truncated[index] = tokenizer.truncate(text, max_tokens), True
    return Job(model, texts, truncated if truncate else None, options, parameters.return_scores,
               parameters.n_best is not None)
