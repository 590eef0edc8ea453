"""export: convert trained model folders into verified, self-contained ONNX bundles (and, with ``export.hf``,
transformers folders)."""

from .onnx_export import ExportError, ParityError, export_bundle

__all__ = ["ExportError", "ParityError", "export_bundle"]
