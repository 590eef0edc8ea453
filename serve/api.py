"""The HTTP API: the Hugging Face translation task over FastAPI, with limits checked before any work.

    POST /translate   {"inputs": str | [str], "parameters": {...}} -> [{"translation_text": ...}, ...]
    GET  /health      200 once every model is loaded (the server listens only then)
    GET  /models      name, languages, workers, limits and versions of each model
    GET  /docs        OpenAPI documentation (schema at /openapi.json)

Three separate pieces: this module validates at the edge and hands clean values inward (:func:`check_request`),
:class:`serve.batcher.Batcher` gathers concurrent requests into search batches, :class:`serve.Translator` translates.
Every rejected request is a JSON ``{"error", "error_type", "field"}`` with a 4xx status (503 with Retry-After when
the queue is full); nothing a client sends makes a 500.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import unicodedata
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from core.search import Translation

from .batcher import Batcher, QueueFull, SearchOptions
from .translator import Translator


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; every limit is checked before any translation work."""

    max_body_bytes: int = 256 * 1024
    max_inputs: int = 64  # texts per request
    max_input_chars: int = 2000  # characters per text
    max_input_tokens: int = 256  # source tokens per text (also capped by the model's max_positions)
    max_new_tokens: int = 256  # output tokens, EOS included
    max_beams: int = 8
    max_attention_inputs: int = 4  # texts per request with return_attention
    length_penalty_range: tuple[float, float] = (0.0, 2.0)


@dataclass(frozen=True)
class BatchSettings:
    """Dynamic batching per model: the largest search batch, how long to wait for one, the queue bound."""

    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 1024  # sentences waiting per model; more answers 503 with Retry-After


class GenerateParameters(BaseModel):
    """The generation settings this server supports (the Hugging Face names)."""

    model_config = ConfigDict(extra="forbid")
    num_beams: StrictInt | None = Field(None, description="beam size, 1 (greedy) to the server's max_beams; default 5")
    max_new_tokens: StrictInt | None = Field(
        None, description="most output tokens, EOS included; default 1.5 x source tokens + 10")
    length_penalty: StrictFloat | StrictInt | None = Field(
        None, description="score = log P / length^length_penalty; default 1.0")


class TranslationParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src_lang: StrictStr | None = Field(None, description="source language; optional when one model is loaded")
    tgt_lang: StrictStr | None = Field(None, description="target language; optional when one model is loaded")
    clean_up_tokenization_spaces: StrictBool | None = Field(
        None, description="accepted for compatibility; output is always clean")
    truncation: Literal["do_not_truncate", "longest_first", "only_first"] | None = Field(
        None, description="do_not_truncate (default): an over-long input is an error; otherwise it is cut to fit")
    generate_parameters: GenerateParameters | None = None
    return_scores: StrictBool = Field(False, description="add each translation's length-normalized log-probability")
    n_best: StrictInt | None = Field(None, description="add the n best hypotheses (1 to num_beams)")
    return_attention: StrictBool = Field(
        False, description="add every layer's and head's attention of the chosen translation (few inputs only)")


class TranslationRequest(BaseModel):
    """The Hugging Face translation task body."""

    model_config = ConfigDict(extra="forbid")
    inputs: StrictStr | list[StrictStr]
    parameters: TranslationParameters | None = None


class Hypothesis(BaseModel):
    translation_text: str
    score: float


class AttentionOutput(BaseModel):
    source_tokens: list[str]
    target_tokens: list[str]
    encoder: list = Field(description="[layers, heads, S, S]")
    decoder: list = Field(description="[layers, heads, T, T]; keys are <s> and target_tokens[:-1]")
    cross: list = Field(description="[layers, heads, T, S]")


class TranslationOutput(BaseModel):
    translation_text: str
    unknown_characters: int = Field(description="source characters the model cannot read (they became <unk>)")
    truncated: bool | None = Field(None, description="present when truncation was asked for")
    score: float | None = None
    n_best: list[Hypothesis] | None = None
    attention: AttentionOutput | None = None


class ErrorBody(BaseModel):
    error: str
    error_type: str
    field: str | None = None


class RequestError(Exception):
    """A request the server refuses; becomes a JSON error with this status."""

    def __init__(self, status: int, field: str | None, message: str, error_type: str = "validation",
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.error_type, self.headers = status, field, message, error_type, headers


@dataclass
class Model:
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


def check_request(request: TranslationRequest, models: Sequence[Model], limits: Limits) -> Job:
    """Every limit and rule of the API, checked before any work; raises RequestError naming the field."""
    parameters = request.parameters or TranslationParameters()
    generate = parameters.generate_parameters or GenerateParameters()
    texts = [request.inputs] if isinstance(request.inputs, str) else list(request.inputs)
    if not texts:
        raise RequestError(422, "inputs", "must not be an empty list")
    if len(texts) > limits.max_inputs:
        raise RequestError(422, "inputs", f"{len(texts)} texts; at most {limits.max_inputs} per request")
    for index, text in enumerate(texts):
        field = "inputs" if isinstance(request.inputs, str) else f"inputs[{index}]"
        if len(text) > limits.max_input_chars:
            raise RequestError(422, field, f"{len(text)} characters; at most {limits.max_input_chars}")
        problem = bad_character(text)
        if problem:
            raise RequestError(422, field, f"contains {problem}")
    model = choose_model(models, parameters.src_lang, parameters.tgt_lang)

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

    truncate = parameters.truncation not in (None, "do_not_truncate")
    max_tokens = model.max_input_tokens(limits)
    tokenizer = model.translator.tokenizer
    truncated = [False] * len(texts)
    for index, text in enumerate(texts):
        count = len(tokenizer.encode(text))
        if count <= max_tokens:
            continue
        if not truncate:
            field = "inputs" if isinstance(request.inputs, str) else f"inputs[{index}]"
            raise RequestError(422, field, f"{count} tokens; at most {max_tokens} (or set parameters.truncation to "
                                           "'longest_first' to cut it)")
        texts[index], truncated[index] = tokenizer.truncate(text, max_tokens), True
    options = SearchOptions(beam_size=beam_size, length_penalty=length_penalty, max_length=generate.max_new_tokens,
                            n_best=n_best, return_attention=parameters.return_attention)
    return Job(model, texts, truncated if truncate else None, options, parameters.return_scores,
               parameters.n_best is not None)


def render(translation: Translation, job: Job, index: int) -> TranslationOutput:
    """The response item for one translation, with the extras the request asked for."""
    decode = job.model.translator.tokenizer.decode
    attention = translation.attention
    return TranslationOutput(
        translation_text=translation.text,
        unknown_characters=translation.unknown_characters,
        truncated=None if job.truncated is None else job.truncated[index],
        score=translation.score if job.return_scores else None,
        n_best=[Hypothesis(translation_text=decode(list(h.token_ids)), score=h.score) for h in translation.hypotheses]
        if job.return_n_best else None,
        attention=AttentionOutput(source_tokens=attention.source_tokens, target_tokens=attention.target_tokens,
                                  encoder=attention.encoder.tolist(), decoder=attention.decoder.tolist(),
                                  cross=attention.cross.tolist()) if attention is not None else None,
    )


def resident_memory_bytes() -> int:
    """This process's resident set size now (Linux), or its peak where /proc is absent."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def field_of(location: Sequence) -> str:
    """('body', 'inputs', 'list[str]', 2) -> 'inputs[2]': pydantic's error location as the client wrote it."""
    field = ""
    for part in location[1:] if location and location[0] == "body" else location:
        if isinstance(part, int):
            field += f"[{part}]"
        elif part in ("str", "list[str]", "int", "float"):
            continue  # pydantic names the union member it tried; the client never wrote it
        else:
            field += f".{part}" if field else str(part)
    return field or "body"


def error_response(status: int, message: str, error_type: str, field: str | None, headers: dict | None = None):
    return JSONResponse(ErrorBody(error=message, error_type=error_type, field=field).model_dump(), status_code=status,
                        headers=headers)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over max_bytes is answered 413 before it is parsed (declared or streamed)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = error_response(413, f"request body over {self.max_bytes} bytes", "too_large", "body")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await too_large(scope, receive, send)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await too_large(scope, receive, send)


def create_app(load_translators: Callable[[], Sequence[Translator]], limits: Limits = Limits(),
               batching: BatchSettings = BatchSettings()) -> FastAPI:
    """The FastAPI app. ``load_translators`` runs once at start-up; the server answers only after it returns."""
    models: list[Model] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        translators = await asyncio.to_thread(load_translators)
        pairs = [(t.source_lang, t.target_lang) for t in translators]
        if len(translators) > 1 and (any(None in pair for pair in pairs) or len(set(pairs)) < len(pairs)):
            raise RuntimeError(f"with several models every bundle needs its own language pair, got {pairs} "
                               "(re-export with --source-lang/--target-lang)")
        for translator in translators:
            batcher = Batcher(translator.translate, max_batch_size=batching.max_batch_size,
                              max_wait=batching.max_wait_ms / 1000, max_queue=batching.max_queue,
                              workers=translator.workers)
            batcher.start()
            models.append(Model(translator, batcher))
        try:
            yield
        finally:
            for model in models:
                await model.batcher.stop()
            models.clear()

    app = FastAPI(title="attention-mt", version="0.1.0", lifespan=lifespan,
                  description="Transformer translation on onnxruntime: the Hugging Face translation task, with "
                              "scores, n-best lists and every attention head on request.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.state.models = models
    error_responses = {status: {"model": ErrorBody} for status in (400, 413, 422, 503)}

    @app.exception_handler(RequestError)
    async def refuse(request: Request, error: RequestError):
        message = f"{error.field}: {error.message}" if error.field else error.message
        return error_response(error.status, message, error.error_type, error.field, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = max(error.errors(), key=lambda e: len(e["loc"]))  # a union's members: the one that got furthest
        if first["type"] == "json_invalid":
            return error_response(400, f"body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                                  "invalid_json", "body")
        field = field_of(first["loc"])
        if first["type"] == "extra_forbidden":
            message = "is not a supported parameter"
        elif field.startswith("inputs") and first["type"] in ("string_type", "list_type"):
            message = "must be a string" if field.startswith("inputs[") else "must be a string or a list of strings"
        else:
            message = first["msg"][0].lower() + first["msg"][1:]
        return await refuse(request, RequestError(422, field, message))

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception):  # a bug: still a JSON answer, never a dropped connection
        return error_response(500, f"internal error: {type(error).__name__}", "internal", None)

    @app.post("/translate", response_model=list[TranslationOutput], response_model_exclude_none=True,
              responses=error_responses, summary="Translate one text or a list of texts")
    async def translate(request: TranslationRequest) -> list[TranslationOutput]:
        job = check_request(request, models, limits)
        try:
            results = await job.model.batcher.submit(job.texts, job.options)
        except QueueFull as error:
            raise RequestError(503, None, f"server busy ({error}); retry later", "overloaded",
                               {"Retry-After": "1"}) from None
        return [render(result, job, index) for index, result in enumerate(results)]

    @app.get("/health", summary="Ready: every model is loaded")
    async def health() -> dict:
        return {"status": "ready", "models": [m.translator.name for m in models],
                "queued": {m.translator.name: m.batcher.queued for m in models},
                "rss_bytes": resident_memory_bytes()}

    @app.get("/models", summary="The loaded models, their languages, limits and versions")
    async def list_models() -> list[dict]:
        return [{"name": m.translator.name, "source_lang": m.translator.source_lang,
                 "target_lang": m.translator.target_lang, "workers": m.translator.workers,
                 "threads": m.translator.threads, "limits": m.limits(limits),
                 "batching": asdict(batching), "config": m.translator.config.to_dict(),
                 "versions": m.translator.manifest.get("versions", {})} for m in models]

    return app


def load_bundles(directories: Sequence[str], *, threads: int = 1, workers: int | None = None):
    """A loader for :func:`create_app`: the translators of these bundle folders."""
    return lambda: [Translator(directory, threads=threads, workers=workers) for directory in directories]


__all__ = ["BatchSettings", "Limits", "RequestError", "TranslationRequest", "check_request", "create_app",
           "load_bundles"]
