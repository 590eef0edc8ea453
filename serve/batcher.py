"""Dynamic batching: concurrent requests for one model become one search batch.

A :class:`Batcher` owns ``workers`` threads that run the translator, so inference never blocks the event loop
(onnxruntime sessions may be run by several threads at once). Requests queue their sentences; a free worker takes
up to ``max_batch_size`` queued sentences that share the same search options (waiting at most ``max_wait``
seconds for more to arrive when fewer are queued), translates them in one call and hands each request its
results. The queue is bounded in sentences: a request that would overflow it is refused with :class:`QueueFull`
before anything is queued. Knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from core.search import Translation
from core.translator import BaseTranslator


@dataclass(frozen=True)
class SearchOptions:
    """The keyword options of :meth:`serve.Translator.translate` that one batch must share."""

    beam_size: int = 5
    length_penalty: float = 1.0
    max_length: int | None = None
    n_best: int = 1
    return_attention: bool = False


@dataclass(frozen=True)
class BatchSettings:
    """Dynamic batching per model: the largest search batch, how long to wait for one, the queue bound."""

    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 1024  # sentences waiting per model; more answers 503 with Retry-After


Search = Callable[[list[str], SearchOptions], list[Translation]]  # one batch of texts, with their shared options


def searcher(translator: BaseTranslator) -> Search:
    """The batcher's view of a translator: ``translate`` with one batch's options."""

    def search(texts: list[str], options: SearchOptions) -> list[Translation]:
        return translator.translate(texts, beam_size=options.beam_size, length_penalty=options.length_penalty,
                                    max_length=options.max_length, n_best=options.n_best,
                                    return_attention=options.return_attention)

    return search


class QueueFull(RuntimeError):
    """The batcher already holds as many queued sentences as it may."""


@dataclass
class _Pending:
    text: str
    options: SearchOptions
    future: asyncio.Future


class Batcher:
    """Gather concurrent ``submit`` calls into batched calls of ``search`` (``workers`` at a time, off the event
    loop)."""

    def __init__(self, search: Search, *, max_batch_size: int = 32, max_wait: float = 0.002,
                 max_queue: int = 1024, workers: int = 1) -> None:
        if max_batch_size < 1 or max_queue < max_batch_size or max_wait < 0 or workers < 1:
            raise ValueError("need max_batch_size >= 1, max_queue >= max_batch_size, max_wait >= 0 and workers >= 1")
        self._search = search
        self.max_batch_size, self.max_wait, self.max_queue = max_batch_size, max_wait, max_queue
        self._pending: deque[_Pending] = deque()
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

    async def submit(self, texts: Sequence[str], options: SearchOptions) -> list[Translation]:
        """Queue texts and wait for their translations, in order. Raises QueueFull when there is no room."""
        if len(self._pending) + len(texts) > self.max_queue:
            raise QueueFull(f"{len(self._pending)} sentences are queued; the limit is {self.max_queue}")
        loop = asyncio.get_running_loop()
        items = [_Pending(text, options, loop.create_future()) for text in texts]
        self._pending.extend(items)
        self._arrived.set()
        return list(await asyncio.gather(*(item.future for item in items)))

    def _take_batch(self) -> list[_Pending]:
        """Up to max_batch_size queued items sharing the oldest item's options; others keep their place."""
        if not self._pending:  # another worker took them while this one waited
            return []
        options = self._pending[0].options
        batch, rest = [], deque()
        while self._pending:
            item = self._pending.popleft()
            if item.future.done():  # its request went away (client disconnected)
                continue
            if item.options == options and len(batch) < self.max_batch_size:
                batch.append(item)
            else:
                rest.append(item)
        self._pending = rest
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
            options = batch[0].options
            try:
                results = await loop.run_in_executor(
                    self._executor, self._search, [item.text for item in batch], options)
            except Exception as error:  # noqa: BLE001 - handed to every waiting request
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            for item, result in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(result)
