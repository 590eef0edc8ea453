"""The HTTP API: the Hugging Face translation task over FastAPI, with limits checked before any work.

    POST /translate   {"inputs": str | [str], "parameters": {...}} -> [{"translation_text": ...}, ...]
    GET  /health      200 once every model is loaded (the server listens only then)
    GET  /models      name, languages, workers, limits and versions of each model
    GET  /docs        OpenAPI documentation (schema at /openapi.json)

Separate pieces: :mod:`serve.schemas` types the bodies, :mod:`serve.validation` checks every limit and hands clean
values inward, :class:`serve.batcher.Batcher` gathers concurrent requests into search batches, :class:`serve.Translator`
translates; this module wires them into routes. Every rejected request is a JSON ``{"error", "error_type", "field"}``
with a 4xx status (503 with Retry-After when the queue is full); nothing a client sends makes a 500.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.search import BeamRecord, Translation

from .batcher import BatchSettings, Batcher, QueueFull, searcher
from .schemas import (AttentionOutput, BeamNodeOutput, BeamsOutput, ConfidenceOutput, EncodedArray, ErrorBody,
                      ScoredText, TranslationOutput, TranslationRequest)
from .sentences import join_translations
from .translator import Translator
from .validation import Job, Limits, Model, RequestError, check_request


def encoded(weights: np.ndarray) -> EncodedArray:
    """An attention array as base64 little-endian float16 (see :class:`serve.schemas.EncodedArray`)."""
    return EncodedArray(shape=list(weights.shape), data=base64.b64encode(weights.astype("<f2").tobytes()).decode())


def beams_output(record: BeamRecord, token_of: Callable[[int], str]) -> BeamsOutput:
    """A beam record as the response's JSON (each node with its token text)."""
    return BeamsOutput(steps=[[BeamNodeOutput(token=token_of(n.token_id), token_id=n.token_id, parent=n.parent,
                                              log_prob=n.log_prob, token_log_prob=n.token_log_prob, status=n.status)
                               for n in step] for step in record.steps], hypotheses=list(record.hypotheses))


def render(translation: Translation, job: Job, index: int) -> TranslationOutput:
    """The response item for one translation, with the extras the request asked for."""
    decode = job.model.translator.tokenizer.decode
    attention, confidence = translation.attention, translation.confidence
    return TranslationOutput(
        translation_text=translation.text,
        unknown_characters=translation.unknown_characters,
        confidence=None if confidence is None else ConfidenceOutput(score=confidence.score, label=confidence.label),
        truncated=None if job.truncated is None else job.truncated[index],
        score=translation.score if job.return_scores else None,
        n_best=[ScoredText(translation_text=decode(list(h.token_ids)), score=h.score) for h in translation.hypotheses]
        if job.return_n_best else None,
        attention=AttentionOutput(source_tokens=attention.source_tokens, target_tokens=attention.target_tokens,
                                  encoder=encoded(attention.encoder), decoder=encoded(attention.decoder),
                                  cross=encoded(attention.cross)) if attention is not None else None,
        beams=None if translation.beams is None else beams_output(translation.beams,
                                                                  job.model.translator.tokenizer.id_to_token),
    )


def resident_memory_bytes() -> int | None:
    """This process's resident set size now (Linux), its peak elsewhere on Unix, None where neither is known."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    try:
        import resource  # Unix only
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux and BSD kilobytes


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


class BodyLimit:
    """ASGI middleware: the request body is read here first, bounded in size and time, before anything parses it.

    Over ``max_bytes`` (declared by Content-Length or streamed in chunks) answers 413; a body that stops arriving
    for ``timeout`` seconds (a client that lies about its Content-Length, or trickles) answers 408 and the
    connection closes; a compressed body (Content-Encoding) answers 415. All in the API's one error shape.
    """

    def __init__(self, app, max_bytes: int, timeout: float = 10.0) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self.refuse(413, f"request body over {self.max_bytes} bytes", "too_large", scope, receive, send)
        if headers.get(b"content-encoding", b"identity").lower() != b"identity":
            return await self.refuse(415, "compressed request bodies are not accepted; send plain UTF-8 JSON",
                                     "unsupported_media_type", scope, receive, send)
        body, more = b"", True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                return await self.refuse(408, f"the request body did not arrive within {self.timeout:g} s",
                                         "timeout", scope, receive, send)
            if message["type"] == "http.disconnect":
                return None  # the client left: nothing to answer, nothing to run
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self.refuse(413, f"request body over {self.max_bytes} bytes", "too_large", scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as the server would report it
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def refuse(status: int, message: str, error_type: str, scope, receive, send):
        response = error_response(status, message, error_type, "body", {"Connection": "close"})
        await response(scope, receive, send)


def check_language_pairs(translators: Sequence[Translator]) -> None:
    """Several models are told apart by their language pairs: each needs its own (ValueError otherwise)."""
    pairs = [(t.source_lang, t.target_lang) for t in translators]
    if len(translators) > 1 and (any(None in pair for pair in pairs) or len(set(pairs)) < len(pairs)):
        raise ValueError(f"with several models every bundle needs its own language pair, got {pairs} "
                         "(re-export with --source-lang/--target-lang)")


def model_lifespan(load_translators: Callable[[], Sequence[Translator]], batching: BatchSettings,
                   models: list[Model]):
    """Load the translators once (off the event loop), start one batcher each, stop them at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        translators = await asyncio.to_thread(load_translators)
        check_language_pairs(translators)
        for translator in translators:
            batcher = Batcher(searcher(translator), max_batch_size=batching.max_batch_size,
                              max_batch_cost=batching.max_batch_cost, max_wait=batching.max_wait_ms / 1000,
                              max_queue=batching.max_queue, workers=translator.workers)
            batcher.start()
            models.append(Model(translator, batcher))
        try:
            yield
        finally:
            for model in models:
                await model.batcher.stop()
            models.clear()

    return lifespan


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal as the one JSON error shape, naming the field the client wrote."""

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

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 400:  # FastAPI could not parse the body: not UTF-8 JSON, or nested too deep
            return error_response(400, "body is not valid JSON (UTF-8, at most a few hundred levels deep)",
                                  "invalid_json", "body")
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http")
        message = {404: f"no route {request.url.path}; the API has POST /translate, GET /health, GET /models",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(error.status_code,
                                                                                       str(error.detail))
        return error_response(error.status_code, message, error_type, None, error.headers)

    @app.exception_handler(ClientGone)
    async def client_left(request: Request, error: ClientGone):  # nobody reads it; logged as 499, as nginx does
        return error_response(499, "the client closed the connection", "client_gone", None)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception):  # a bug: still a JSON answer, never a dropped connection
        return error_response(500, f"internal error: {type(error).__name__}", "internal", None)


class ClientGone(Exception):
    """The client closed its connection before the answer: nobody is left to read it."""


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body was read already: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def run_job(job: Job, request: Request, deadline_s: float) -> list[Translation]:
    """The job's translations, unless the deadline passes first (504) or the client leaves: then its sentences leave
    the queue, and a search running them stops at its next step."""
    work = asyncio.ensure_future(job.model.batcher.submit(job.texts, job.options, job.costs, job.target_prefix))
    gone = asyncio.ensure_future(client_gone(request))
    try:
        done, _ = await asyncio.wait({work, gone}, timeout=deadline_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, gone):
            task.cancel()  # no effect on a finished task
    if work in done:
        try:
            return work.result()
        except QueueFull as error:
            raise RequestError(503, None, f"server busy ({error}); retry later", "overloaded",
                               {"Retry-After": "1"}) from None
    if gone in done:
        raise ClientGone
    raise RequestError(504, None, f"no answer within the deadline of {deadline_s:g} s; the work was stopped "
                                  "(send fewer or shorter inputs, or a lower num_beams or max_new_tokens)", "timeout")


def create_app(load_translators: Callable[[], Sequence[Translator]], limits: Limits = Limits(),
               batching: BatchSettings = BatchSettings()) -> FastAPI:
    """The FastAPI app. ``load_translators`` runs once at start-up; the server answers only after it returns."""
    models: list[Model] = []
    app = FastAPI(title="attention-mt", version="0.1.0", lifespan=model_lifespan(load_translators, batching, models),
                  description="Transformer translation on onnxruntime: the Hugging Face translation task, with "
                              "scores, n-best lists and every attention head on request.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout_s)
    app.state.models = models
    add_error_handlers(app)
    error_responses = {status: {"model": ErrorBody} for status in (400, 408, 413, 415, 422, 503, 504)}

    @app.post("/translate", response_model=list[TranslationOutput], response_model_exclude_none=True,
              responses=error_responses, summary="Translate one text or a list of texts")
    async def translate(body: TranslationRequest, request: Request) -> list[TranslationOutput]:
        job = check_request(body, models, limits)
        results = await run_job(job, request, limits.deadline_s)
        if job.sentence_counts is not None:  # split_sentences: each input's sentences joined again
            results = join_translations(job.inputs, results, job.sentence_counts)
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
                 "threads": m.translator.threads, "precision": m.translator.precision, "limits": m.limits(limits),
                 "batching": asdict(batching), "config": m.translator.config.to_dict(),
                 "versions": m.translator.manifest.get("versions", {})} for m in models]

    return app


def load_bundles(directories: Sequence[str], *, threads: int = 1, workers: int | None = None,
                 precision: str = "float32"):
    """A loader for :func:`create_app`: the translators of these bundle folders (``precision``: see
    :class:`serve.Translator`)."""
    return lambda: [Translator(directory, threads=threads, workers=workers, precision=precision)
                    for directory in directories]


__all__ = ["BatchSettings", "Limits", "RequestError", "TranslationRequest", "check_request", "create_app",
           "load_bundles"]
