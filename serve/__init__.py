"""serve: run exported ONNX bundles under onnxruntime, with no torch at run time.

``Translator`` is the Python API; ``python -m serve translate`` the command line; ``python -m serve http`` the HTTP
server (``serve.api``), whose dynamic batcher is ``serve.batcher``.
"""

from core.search import Attention, Translation

from .bundle import BundleError, OnnxBackend, load_manifest, verify_checksums
from .translator import OnnxTranslator, Translator

__all__ = ["Attention", "BundleError", "OnnxBackend", "OnnxTranslator", "Translation", "Translator", "load_manifest",
           "verify_checksums"]
