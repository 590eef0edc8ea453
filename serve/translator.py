"""The public translator: an exported bundle under onnxruntime, with the project's one search, and no torch."""

from __future__ import annotations

from pathlib import Path

from core.bundle import OnnxBackend, load_confidence, search_rules
from core.translator import BaseTranslator, available_cores


class Translator(BaseTranslator):
    """Translate with an exported bundle folder (``python -m export``)::

        translator = Translator("models/en-de/onnx")
        translator.translate(["Two dogs run through the snow."], beam_size=5)[0].text

    Loading verifies every file the translator reads against the manifest's sha256 and raises
    :class:`serve.BundleError` naming the first one that is missing or changed. A bundle whose manifest lists
    ``confidence.json`` (``python -m serve.calibrate``) gives every translation a ``confidence``; others give None.
    ``workers`` batches are searched at
    the same time (default: one per available core), each run with ``threads`` onnxruntime threads (default 1):
    on a 2-core machine two single-threaded workers translate 1.5x faster than one worker with two threads. The
    ``translate`` keywords and results are those of ``core.TorchTranslator`` (both are
    :class:`core.translator.BaseTranslator`). One instance may serve many threads. ``precision="int8"`` runs the
    bundle's row-wise int8 encoder and step graphs (faster; a sentence's output still never depends on its batch
    mates); a bundle exported without them raises :class:`serve.BundleError`.
    """

    def __init__(self, bundle_dir: str | Path, *, threads: int = 1, workers: int | None = None,
                 precision: str = "float32") -> None:
        self.directory = Path(bundle_dir)
        backend, tokenizer, self.manifest = OnnxBackend.from_bundle(self.directory, threads=threads,
                                                                    precision=precision)
        self.precision = precision
        super().__init__(backend, tokenizer, workers=workers or available_cores(),
                         confidence=load_confidence(self.directory, self.manifest), rules=search_rules(self.manifest))
        self.threads = threads

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
