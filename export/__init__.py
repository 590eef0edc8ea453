"""export: convert trained model folders into verified, self-contained ONNX bundles."""

from .onnx_export import ExportError, ParityError, export_bundle

__all__ = ["ExportError", "ParityError", "export_bundle"]
