"""serve: run exported ONNX bundles under onnxruntime, with no torch at run time.

``Translator`` is the Python API; ``python -m serve translate`` the command line; ``python -m serve http`` the HTTP
server (``serve.api``), whose dynamic batcher is ``serve.batcher``. The bundle format and its onnxruntime backend
live in :mod:`core.bundle`, which the exporter reads too.
"""

from core.bundle import BundleError, OnnxBackend, load_manifest, verify_checksums
from core.confidence import Confidence
from core.search import Attention, Translation

from .translator import Translator

__all__ = ["Attention", "BundleError", "Confidence", "OnnxBackend", "Translation", "Translator", "load_manifest",
           "verify_checksums"]
