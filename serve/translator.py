"""The public translator: an exported bundle under onnxruntime, with the project's one search, and no torch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from core.search import Translation, translate

from .bundle import OnnxBackend


class Translator:
    """Translate with an exported bundle folder (``python -m export``)::

        translator = Translator("models/en-de/onnx")
        translator.translate(["Two dogs run through the snow."], beam_size=5)[0].text

    Loading verifies every file the translator reads against the manifest's sha256 and raises
    :class:`serve.BundleError` naming the first one that is missing or changed. ``workers`` batches are searched at
    the same time (default: one per available core), each run with ``threads`` onnxruntime threads (default 1):
    on a 2-core machine two single-threaded workers translate 1.5x faster than one worker with two threads. One
    instance may serve many threads.
    """

    def __init__(self, bundle_dir: str | Path, *, threads: int = 1, workers: int | None = None) -> None:
        self.directory = Path(bundle_dir)
        self.backend, self.tokenizer, self.manifest = OnnxBackend.from_bundle(self.directory, threads=threads)
        self.config = self.backend.config
        self.threads = threads
        self.workers = workers or len(os.sched_getaffinity(0))

    @property
    def name(self) -> str:
        """The model's name: its folder (``models/en-de/onnx`` is ``en-de``)."""
        directory = self.directory.resolve()
        return directory.parent.name if directory.name == "onnx" else directory.name

    @property
    def source_lang(self) -> str | None:
        return (self.manifest.get("languages") or {}).get("source")

    @property
    def target_lang(self) -> str | None:
        return (self.manifest.get("languages") or {}).get("target")

    @property
    def max_source_tokens(self) -> int:
        """The most tokens a source may have (its EOS takes one more position)."""
        return self.config.max_positions - 1

    def translate(
        self,
        texts: Sequence[str],
        *,
        beam_size: int = 5,
        length_penalty: float = 1.0,
        max_length: int | None = None,
        n_best: int = 1,
        return_attention: bool = False,
        batch_size: int = 32,
        progress: bool = False,
    ) -> list[Translation]:
        """Translate texts, returned in input order; ``beam_size=1`` is greedy.

        The output has at most ``max_length`` tokens (EOS included), and never more than 1.5 x the source tokens
        + 10. An empty text translates to "". Each :class:`core.Translation` holds the text, its subword tokens,
        the n-best list, the source tokens and how many source characters the model does not know
        (``unknown_characters``); with ``return_attention`` also every layer's and head's attention of the chosen
        hypothesis (:class:`core.search.Attention`). A source over :attr:`max_source_tokens` raises ValueError;
        ``self.tokenizer.truncate(text, translator.max_source_tokens)`` cuts one to fit. Texts are searched in
        length-sorted batches of ``batch_size``, ``workers`` batches at a time; the result does not depend on either.
        """
        return translate(self.backend, self.tokenizer, texts, beam_size=beam_size, length_penalty=length_penalty,
                         max_length=max_length, n_best=n_best, return_attention=return_attention,
                         batch_size=batch_size, workers=self.workers, progress=progress)


OnnxTranslator = Translator  # the name before serve grew an HTTP API; kept for existing callers
