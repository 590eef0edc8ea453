"""One translator shape for every backend: load once, then ``translate(texts, **keyword options)``.

:class:`BaseTranslator` holds a search backend, its tokenizer and one thread pool, and defines ``translate`` once;
``core.TorchTranslator`` (a PyTorch model folder) and ``serve.Translator`` (an exported ONNX bundle) only load.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from .confidence import ConfidenceModel
from .search import DEFAULT_RULES, SearchBackend, SearchRules, Translation, translate


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity where the OS has one (Linux), else the core count."""
    affinity = getattr(os, "sched_getaffinity", None)  # absent on macOS and Windows
    if affinity is not None:
        return len(affinity(0))
    return os.cpu_count() or 1


def check_options(*, beam_size, length_penalty, max_length, n_best, batch_size, max_beam_size: int) -> None:
    """Refuse, before any work, options no search can honour (NaN, infinite, zero, negative, non-integer, huge).

    The messages are the project's, shared word for word with ``serve/js/translator.mjs``.
    """

    def integer(value) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if not integer(beam_size) or not 1 <= beam_size <= max_beam_size:
        raise ValueError(f"beam_size must be an integer between 1 and {max_beam_size}, got {beam_size}")
    if not isinstance(length_penalty, numbers.Real) or not math.isfinite(length_penalty) or length_penalty < 0:
        raise ValueError(f"length_penalty must be a finite number >= 0, got {length_penalty}")
    if max_length is not None and (not integer(max_length) or max_length < 1):
        raise ValueError(f"max_length must be an integer >= 1, got {max_length}")
    if not integer(n_best) or not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be an integer between 1 and beam_size ({beam_size}), got {n_best}")
    if not integer(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")


class BaseTranslator:
    """Translate with a :class:`core.search.SearchBackend`; ``workers`` length-sorted batches are searched at once.

    The pool of ``workers`` threads is created once, on the first call that has more than one batch, and shared by
    every later call (the backend must allow concurrent calls, as onnxruntime and torch do). One instance may serve
    many threads. With a ``confidence`` model every translation carries its :class:`core.confidence.Confidence`.
    ``rules`` (:class:`core.search.SearchRules`) are the model's own search settings, read from its folder or bundle.
    """

    def __init__(self, backend: SearchBackend, tokenizer, *, workers: int = 1,
                 confidence: ConfidenceModel | None = None, rules: SearchRules = DEFAULT_RULES) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        tokenizer.check_compatible(backend.config)
        rules.check(backend.config)
        self.rules = rules
        self.backend = backend
        self.tokenizer = tokenizer
        self.config = backend.config
        self.workers = workers
        self.confidence = confidence
        self._pool: ThreadPoolExecutor | None = None

    @property
    def max_beam_size(self) -> int:
        """The largest beam: the backend's, less the candidates banned tokens take from each step."""
        return (2 * self.backend.max_beam_size - len(self.rules.banned_ids)) // 2

    @property
    def max_source_tokens(self) -> int:
        """The most tokens a source may have (its EOS takes one more position)."""
        return self.config.max_positions - 1

    def _executor(self) -> ThreadPoolExecutor | None:
        if self.workers > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="search")
        return self._pool

    def translate(
        self,
        texts: Sequence[str],
        *,
        beam_size: int = 5,
        length_penalty: float = 1.0,
        max_length: int | None = None,
        n_best: int = 1,
        return_attention: bool = False,
        record_beams: bool = False,
        target_prefix: Sequence[str | Sequence[str] | None] | None = None,
        heads_off: Sequence | None = None,
        return_trace: bool = False,
        batch_size: int = 32,
        progress: bool = False,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[Translation]:
        """Translate texts, returned in input order; ``beam_size=1`` is greedy.

        The output has at most ``max_length`` tokens (EOS included), and never more than 1.5 x the source tokens
        + 10. An empty text translates to "". Each :class:`core.Translation` holds the text, its subword tokens,
        the n-best list, the source tokens and how many source characters the model does not know
        (``unknown_characters``); with ``return_attention`` also every layer's and head's attention of the chosen
        hypothesis (:class:`core.search.Attention`); with ``record_beams`` every step of the search
        (:class:`core.search.BeamRecord`: each candidate ranked, its parent, scores and fate); ``target_prefix``, one
        entry per text (None, a text or a list of subword tokens), is the start each translation must take, and the
        search continues from it (CTranslate2's ``target_prefix``); ``heads_off`` lists attention heads to switch off,
        (kind, layer, head) triples or "kind.layer.head" strings (:mod:`core.heads`; kind "encoder", "decoder" or
        "cross", counted from 0); ``return_trace`` adds the numbers behind every attention weight of the chosen
        hypothesis (:class:`core.heads.Trace`: each sublayer's input, q, K, V, each head's output and its share
        through W^O); with a confidence model, whether the source looks like the
        training data (``confidence``, scored from the chosen hypothesis: no extra model run). A source over
        :attr:`max_source_tokens` raises ValueError; ``self.tokenizer.truncate(text, translator.max_source_tokens)``
        cuts one to fit. Texts are searched in length-sorted batches of ``batch_size``, ``workers`` batches at a
        time; the result does not depend on either. Options out of range (see :func:`check_options`) raise ValueError before any work. ``cancelled``, asked
        before every decoding step, stops the work with :class:`core.search.SearchCancelled` when it says True.
        """
        check_options(beam_size=beam_size, length_penalty=length_penalty, max_length=max_length, n_best=n_best,
                      batch_size=batch_size, max_beam_size=self.max_beam_size)
        results = translate(self.backend, self.tokenizer, texts, rules=self.rules, beam_size=beam_size,
                            length_penalty=length_penalty,
                            max_length=max_length, n_best=n_best, return_attention=return_attention,
                            record_beams=record_beams, target_prefix=target_prefix, heads_off=heads_off,
                            return_trace=return_trace, batch_size=batch_size, pool=self._executor(), progress=progress,
                            cancelled=cancelled)
        if self.confidence is None:
            return results
        return [replace(result, confidence=self.confidence.assess(result)) for result in results]
