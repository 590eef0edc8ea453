"""Dynamic batching: concurrent requests for one model become one search batch, fairly and within a cost.

A :class:`Batcher` owns ``workers`` threads that run the translator, so inference never blocks the event loop
(onnxruntime sessions may be run by several threads at once). Requests queue their sentences; a free worker takes
queued sentences that share the same search options (waiting at most ``max_wait`` seconds for more to arrive when
fewer than ``max_batch_size`` are queued) and translates them in one call. Requests take turns: the next batch
starts with the request served longest ago, so a request of many sentences cannot hold a light one behind it for
more than one batch, and a batch's cost (beams x (source + most target tokens), summed) stays within
``max_batch_cost``, so one batch of very long sentences stays short. A sentence whose request went away (the client
left, or its deadline passed) is dropped from the queue, and a running batch stops at its next decoding step once
none of its requests is waiting. The queue is bounded in sentences: a request that would overflow it is refused
with :class:`QueueFull` before anything is queued. Knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from core.search import SearchCancelled, Translation
from core.translator import BaseTranslator


@dataclass(frozen=True)
class SearchOptions:
    """The keyword options of :meth:`serve.Translator.translate` that one batch must share."""

    beam_size: int = 5
    length_penalty: float = 1.0
    max_length: int | None = None
    n_best: int = 1
    return_attention: bool = False
    record_beams: bool = False
    heads_off: tuple[tuple[str, int, int], ...] = ()  # (kind, layer, head) switched off (core.heads)


@dataclass(frozen=True)
class BatchSettings:
    """Dynamic batching per model: the largest search batch (in sentences and in cost), how long to wait for one,
    the queue bound."""

    max_batch_size: int = 32
    max_batch_cost: int = 8192  # beams x (source + most target tokens), summed; 32 captions at beam 5 cost ~8,000
    max_wait_ms: float = 2.0
    max_queue: int = 1024  # sentences waiting per model; more answers 503 with Retry-After


# One batch of texts, their shared options, a question the search asks before every step (stop now?) and each
# text's target prefix (None when no text of the batch has one).
Search = Callable[[list[str], SearchOptions, Callable[[], bool], list | None], list[Translation]]


def searcher(translator: BaseTranslator) -> Search:
    """The batcher's view of a translator: ``translate`` with one batch's options and its cancel question."""

    def search(texts: list[str], options: SearchOptions, cancelled: Callable[[], bool],
               target_prefix: list | None = None) -> list[Translation]:
        return translator.translate(texts, beam_size=options.beam_size, length_penalty=options.length_penalty,
                                    max_length=options.max_length, n_best=options.n_best,
                                    return_attention=options.return_attention, record_beams=options.record_beams,
                                    target_prefix=target_prefix, heads_off=options.heads_off, cancelled=cancelled)

    return search


class QueueFull(RuntimeError):
    """The batcher already holds as many queued sentences as it may."""


@dataclass
class _Pending:
    text: str
    options: SearchOptions
    future: asyncio.Future
    request: int  # the submit call it came with
    cost: int
    target_prefix: str | tuple[str, ...] | None = None


class Batcher:
    """Gather concurrent ``submit`` calls into batched calls of ``search`` (``workers`` at a time, off the event
    loop)."""

    def __init__(self, search: Search, *, max_batch_size: int = 32, max_batch_cost: int = 8192,
                 max_wait: float = 0.002, max_queue: int = 1024, workers: int = 1) -> None:
        if max_batch_size < 1 or max_queue < max_batch_size or max_wait < 0 or workers < 1 or max_batch_cost < 1:
            raise ValueError("need max_batch_size >= 1, max_batch_cost >= 1, max_queue >= max_batch_size, "
                             "max_wait >= 0 and workers >= 1")
        self._search = search
        self.max_batch_size, self.max_batch_cost = max_batch_size, max_batch_cost
        self.max_wait, self.max_queue = max_wait, max_queue
        self._pending: deque[_Pending] = deque()
        self._turns: deque[int] = deque()  # request ids, the one served longest ago first
        self._request_ids = itertools.count()
        self._arrived = asyncio.Event()
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="translate")
        self._tasks: list[asyncio.Task] = []

    @property
    def queued(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for pending in self._pending:
            pending.future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=True)

    async def submit(self, texts: Sequence[str], options: SearchOptions, costs: Sequence[int] | None = None,
                     target_prefix: Sequence[str | tuple[str, ...] | None] | None = None) -> list[Translation]:
        """Queue texts and wait for their translations, in order. Raises QueueFull when there is no room.

        ``costs`` (one per text; default 1 each) is each sentence's search work, for ``max_batch_cost``;
        ``target_prefix`` (one per text, None for none) the start each translation must take.
        Cancelling the call (the client left, a deadline) drops its sentences from the queue and from the search.
        """
        if len(self._pending) + len(texts) > self.max_queue:
            raise QueueFull(f"{len(self._pending)} sentences are queued; the limit is {self.max_queue}")
        loop = asyncio.get_running_loop()
        request = next(self._request_ids)
        items = [_Pending(text, options, loop.create_future(), request, cost, prefix) for text, cost, prefix in
                 zip(texts, costs if costs is not None else [1] * len(texts), target_prefix or [None] * len(texts))]
        self._pending.extend(items)
        self._turns.append(request)
        self._arrived.set()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        finally:
            for item in items:
                item.future.cancel()  # no effect on those already done; the others leave the queue

    def _take_batch(self) -> list[_Pending]:
        """The next batch: led by the request whose turn it is, filled with queued sentences of the same options
        (requests in turn order) up to max_batch_size sentences and max_batch_cost (at least one sentence)."""
        self._pending = deque(item for item in self._pending if not item.future.done())  # requests that went away
        waiting = {item.request for item in self._pending}
        self._turns = deque(request for request in self._turns if request in waiting)
        if not self._turns:
            return []
        rank = {request: turn for turn, request in enumerate(self._turns)}
        options = next(item.options for item in self._pending if item.request == self._turns[0])
        batch, cost = [], 0
        for item in sorted(self._pending, key=lambda item: rank[item.request]):  # stable: order within a request kept
            if len(batch) == self.max_batch_size:
                break
            if item.options == options and (not batch or cost + item.cost <= self.max_batch_cost):
                batch.append(item)
                cost += item.cost
        taken = set(map(id, batch))
        self._pending = deque(item for item in self._pending if id(item) not in taken)
        served = {item.request for item in batch}
        self._turns = deque([r for r in self._turns if r not in served] + [r for r in self._turns if r in served])
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            if len(self._pending) < self.max_batch_size and self.max_wait:
                await asyncio.sleep(self.max_wait)  # let concurrent requests join this batch
            batch = self._take_batch()
            if not batch:
                continue

            def abandoned(batch=batch) -> bool:  # asked from the search thread: every request of the batch left
                return all(item.future.done() for item in batch)

            prefixes = [item.target_prefix for item in batch]
            try:
                results = await loop.run_in_executor(
                    self._executor, self._search, [item.text for item in batch], batch[0].options, abandoned,
                    prefixes if any(prefix is not None for prefix in prefixes) else None)
            except SearchCancelled:
                continue
            except Exception as error:  # noqa: BLE001 - handed to every waiting request
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            for item, result in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(result)
