"""The HTTP API's rules: every limit checked before any work, and a refused request named by its field.

:func:`check_request` turns a typed :class:`serve.schemas.TranslationRequest` into a :class:`Job` of clean values
for the batcher, or raises :class:`RequestError`. The rules themselves are the shared input policy
(:mod:`serve.policy`); this module adds the HTTP limits and the field names. Knows nothing of FastAPI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from core.heads import parse_head

from .batcher import Batcher, SearchOptions
from .policy import (InputError, InputLimits, attention_weights, bad_character, beam_nodes, check_prefix, find_model,
                     fit_text, max_source_tokens, search_cost)
from .schemas import GenerateParameters, TranslationParameters, TranslationRequest
from .sentences import split_texts
from .translator import Translator


@dataclass(frozen=True)
class Limits:
    """What one request may ask for and how long it may take; every limit is checked before any translation work."""

    max_body_bytes: int = 256 * 1024
    body_timeout_s: float = 10.0  # longest wait for the rest of a body (408 after it)
    deadline_s: float = 30.0  # longest a request may wait and run (504 after it; its search stops)
    max_inputs: int = 64  # texts per request
    max_input_chars: int = 2000  # characters per text
    max_input_tokens: int = 256  # source tokens per text (also capped by the model's max_positions)
    max_new_tokens: int = 256  # output tokens, EOS included
    max_beams: int = 8
    max_attention_inputs: int = 4  # texts per request with return_attention
    max_attention_weights: int = 1_000_000  # attention weights per request (~2.7 MB as base64 float16)
    max_beam_nodes: int = 50_000  # beam-record nodes per request with return_beams (~80 bytes of JSON each)
    length_penalty_range: tuple[float, float] = (0.0, 2.0)

    @property
    def input_limits(self) -> InputLimits:
        return InputLimits(max_chars=self.max_input_chars, max_tokens=self.max_input_tokens, max_beams=self.max_beams,
                           max_new_tokens=self.max_new_tokens, max_attention_weights=self.max_attention_weights,
                           max_beam_nodes=self.max_beam_nodes)


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
        return {**asdict(limits), "max_input_tokens": max_source_tokens(self.translator, limits.input_limits)}


@dataclass(frozen=True)
class Job:
    """A checked request: clean values for the batcher."""

    model: Model
    texts: list[str]
    costs: list[int]  # each text's search work (serve.policy.search_cost)
    truncated: list[bool] | None  # None unless truncation was asked for
    options: SearchOptions
    return_scores: bool
    return_n_best: bool
    target_prefix: list[str | tuple[str, ...] | None] | None = None  # one per text
    inputs: list[str] | None = None  # with split_sentences: the request's texts (``texts`` are their sentences)
    sentence_counts: list[int] | None = None  # with split_sentences: how many of ``texts`` each input gave


def choose_model(models: Sequence[Model], src_lang: str | None, tgt_lang: str | None) -> Model:
    if (src_lang is None) != (tgt_lang is None):
        field = "parameters.tgt_lang" if tgt_lang is None else "parameters.src_lang"
        raise RequestError(422, field, "give both src_lang and tgt_lang, or neither")
    try:
        translator = find_model([m.translator for m in models], src_lang, tgt_lang)
    except InputError as error:
        raise RequestError(422, "parameters.src_lang", str(error)) from None
    return next(m for m in models if m.translator is translator)


def check_range(field: str, value, low, high) -> None:
    if not low <= value <= high:
        raise RequestError(422, field, f"must be between {low} and {high}, got {value}")


def input_field(request: TranslationRequest, index: int) -> str:
    return "inputs" if isinstance(request.inputs, str) else f"inputs[{index}]"


def check_texts(request: TranslationRequest, limits: Limits) -> list[str]:
    """The request's texts: not too many, none with control characters or lone surrogates."""
    texts = [request.inputs] if isinstance(request.inputs, str) else list(request.inputs)
    if not texts:
        raise RequestError(422, "inputs", "must not be an empty list")
    if len(texts) > limits.max_inputs:
        raise RequestError(422, "inputs", f"{len(texts)} texts; at most {limits.max_inputs} per request")
    for index, text in enumerate(texts):
        problem = bad_character(text)
        if problem:
            raise RequestError(422, input_field(request, index), f"contains {problem}")
    return texts


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
                         n_best=n_best, return_attention=parameters.return_attention,
                         record_beams=parameters.return_beams)


def check_heads_off(translator: Translator, heads_off: list[str] | None) -> tuple[tuple[str, int, int], ...]:
    """The heads a request switches off, as sorted (kind, layer, head) triples; at most the model's head count."""
    if not heads_off:
        return ()
    config = translator.config
    heads = (config.n_encoder_layers + 2 * config.n_decoder_layers) * config.n_heads
    if len(heads_off) > heads:
        raise RequestError(422, "parameters.heads_off", f"lists {len(heads_off)} heads; the model has {heads}")
    found = set()
    for index, entry in enumerate(heads_off):
        try:
            found.add(parse_head(entry, config))
        except ValueError as error:
            raise RequestError(422, f"parameters.heads_off[{index}]", str(error)) from None
    return tuple(sorted(found))


def check_request(request: TranslationRequest, models: Sequence[Model], limits: Limits) -> Job:
    """Every limit and rule of the API, checked before any work; raises RequestError naming the field."""
    parameters = request.parameters or TranslationParameters()
    texts = check_texts(request, limits)
    model = choose_model(models, parameters.src_lang, parameters.tgt_lang)
    options = check_options(parameters, texts, limits)
    truncate = parameters.truncation not in (None, "do_not_truncate")
    inputs, counts, owners = None, None, list(range(len(texts)))
    if parameters.split_sentences:
        single = [name for name, asked in (("return_attention", parameters.return_attention),
                                           ("return_beams", parameters.return_beams),
                                           ("n_best", parameters.n_best is not None),
                                           ("target_prefix", parameters.target_prefix is not None)) if asked]
        if single:
            raise RequestError(422, "parameters.split_sentences",
                               f"cannot be combined with {', '.join(single)} (options of single sentences)")
        for index, text in enumerate(texts):  # the character limit is the input's, before it is split
            if len(text) > limits.max_input_chars and not truncate:
                raise RequestError(422, input_field(request, index),
                                   f"{len(text)} characters; at most {limits.max_input_chars} (or set "
                                   "parameters.truncation to 'longest_first' to cut it)")
        inputs = [text[: limits.max_input_chars] for text in texts]
        texts, counts = split_texts(inputs, model.translator.source_lang)
        owners = [index for index, count in enumerate(counts) for _ in range(count)]
    fitted = []
    for owner, text in zip(owners, texts):
        try:
            fitted.append(fit_text(model.translator, text, limits.input_limits, cut=truncate))
        except InputError as error:
            what = " (a sentence of it)" if counts else ""
            raise RequestError(422, input_field(request, owner), f"{error}{what} (or set parameters.truncation to "
                                                                 "'longest_first' to cut it)") from None
    if options.return_attention:
        weights = sum(attention_weights(model.translator, f.tokens, options.max_length) for f in fitted)
        if weights > limits.max_attention_weights:
            raise RequestError(422, "parameters.return_attention",
                               f"the attention of these inputs could hold {weights:,} weights; at most "
                               f"{limits.max_attention_weights:,} per request: send fewer or shorter inputs, or a "
                               "lower max_new_tokens")
    if options.record_beams:
        nodes = sum(beam_nodes(model.translator, f.tokens, options.beam_size, options.max_length) for f in fitted)
        if nodes > limits.max_beam_nodes:
            raise RequestError(422, "parameters.return_beams",
                               f"the beam records of these inputs could hold {nodes:,} nodes; at most "
                               f"{limits.max_beam_nodes:,} per request: send fewer or shorter inputs, fewer beams, "
                               "or a lower max_new_tokens")
    options = replace(options, heads_off=check_heads_off(model.translator, parameters.heads_off))
    prefixes = parameters.target_prefix
    if prefixes is not None:
        if len(prefixes) != len(texts):
            raise RequestError(422, "parameters.target_prefix",
                               f"needs one entry (null, a text or a list of tokens) per input: {len(texts)}, got "
                               f"{len(prefixes)}")
        for index, (prefix, f) in enumerate(zip(prefixes, fitted)):
            try:
                check_prefix(model.translator, prefix, f.tokens, limits.input_limits, options.max_length)
            except InputError as error:
                raise RequestError(422, f"parameters.target_prefix[{index}]", str(error)) from None
        prefixes = [p if p is None or isinstance(p, str) else tuple(p) for p in prefixes]
    costs = [search_cost(model.translator, f.tokens, options.beam_size, options.max_length) for f in fitted]
    truncated = None
    if truncate:
        truncated = [False] * (len(inputs) if inputs is not None else len(fitted))
        for owner, f in zip(owners, fitted):
            truncated[owner] = truncated[owner] or f.was_cut or (inputs is not None and
                                                                 len(request_text(request, owner)) > len(inputs[owner]))
    return Job(model, [f.text for f in fitted], costs, truncated, options, parameters.return_scores,
               parameters.n_best is not None, prefixes, inputs, counts)


def request_text(request: TranslationRequest, index: int) -> str:
    return request.inputs if isinstance(request.inputs, str) else request.inputs[index]
