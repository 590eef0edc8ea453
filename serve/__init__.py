"""serve: run exported ONNX bundles under onnxruntime, with no torch at run time."""

from .bundle import BundleError, OnnxBackend, OnnxTranslator, load_manifest, verify_checksums

__all__ = ["BundleError", "OnnxBackend", "OnnxTranslator", "load_manifest", "verify_checksums"]
