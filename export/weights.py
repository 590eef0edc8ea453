"""Every weight of a bundle stored once: the graphs' initializers moved into shared ONNX external-data files.

The exporter writes each graph with its weights inside, as ``torch.onnx.export`` and the int8 pass make them; then
:func:`share_weights` takes every weight (a float or 8-bit initializer of at least :data:`MIN_SHARED_BYTES`) out of
every graph and stores it once, by content, in a weights file that the graphs point into (ONNX external data:
location, offset, length). The float32 graphs' tensors go into ``weights.bin``; the int8 graphs reuse those (the
embedding, biases, norms) and add only what differs, their quantized weights and scales, in ``weights.int8.bin``.
Integer tensors (shapes, split sizes, axes) stay inside their graph, where shape inference reads them. A matrix
whose transpose is stored already (teacher_forced.onnx reads W^O as it is, for each head's share, where the other
graphs read it transposed) becomes a ``Transpose`` of the stored one, which onnxruntime folds when it loads the
graph. A tensor starts at a multiple of :data:`ALIGNMENT` bytes.

onnxruntime reads a graph's external data from the files beside it (Python and Node by the graph's path, the browser
from the bytes given as ``externalData``), so every runtime reads the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MIN_SHARED_BYTES = 64  # smaller weights (scalars) stay inside their graph
ALIGNMENT = 64  # bytes: every tensor in a weights file starts at a multiple of it


def is_weight(array: np.ndarray) -> bool:
    """A float or 8-bit tensor large enough to share (integer shape data stays in the graph)."""
    return (array.dtype.kind == "f" or array.dtype in (np.int8, np.uint8)) and array.nbytes >= MIN_SHARED_BYTES


def share_weights(directory: Path, groups: Sequence[tuple[str, Sequence[str]]]) -> dict[str, list[str]]:
    """Move the weights of the graph files in ``directory`` into shared weights files, each tensor once.

    ``groups`` is ``[(weights file, [graph files]), ...]`` in order: a graph's tensor already stored (by any
    earlier graph) points there, a new one is appended to its group's file. Rewrites the graph files in place and
    returns the weights files each graph reads, ``{graph file: [weights file, ...]}``.
    """
    stored: dict[tuple, tuple[str, int, int]] = {}  # dtype, shape, bytes -> (file, offset, length)
    reads: dict[str, list[str]] = {}
    for weights_file, graph_files in groups:
        with (directory / weights_file).open("wb") as out:
            for graph_file in graph_files:
                model = onnx.load(str(directory / graph_file))
                transposes = []
                for initializer in model.graph.initializer:
                    array = numpy_helper.to_array(initializer)
                    if not is_weight(array):
                        continue
                    key = key_of(array)
                    if key not in stored and array.ndim == 2 and key_of(array.T) in stored:
                        initializer.name, original = f"{initializer.name}/transposed", initializer.name
                        transposes.append(helper.make_node("Transpose", [initializer.name], [original], perm=[1, 0]))
                        array, key = array.T, key_of(array.T)
                        del initializer.dims[:]
                        initializer.dims.extend(array.shape)
                    if key not in stored:
                        out.write(b"\0" * (-out.tell() % ALIGNMENT))
                        stored[key] = (weights_file, out.tell(), len(key[2]))
                        out.write(key[2])
                    point_to(initializer, *stored[key])
                if transposes:  # before every node: the graph stays topologically sorted
                    nodes = [*transposes, *model.graph.node]
                    del model.graph.node[:]
                    model.graph.node.extend(nodes)
                reads[graph_file] = sorted({location for location, _, _ in (
                    stored_at(initializer) for initializer in model.graph.initializer) if location})
                onnx.save(model, str(directory / graph_file))
    return reads


def key_of(array: np.ndarray) -> tuple:
    """What makes two initializers the same weight (names differ between graphs): dtype, shape, little-endian bytes."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return array.dtype.str, array.shape, little.tobytes()


def point_to(initializer: TensorProto, location: str, offset: int, length: int) -> None:
    """Make ``initializer`` an external-data tensor stored at ``offset`` of ``location`` (its data leaves the graph)."""
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        initializer.ClearField(field)
    del initializer.external_data[:]
    initializer.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        initializer.external_data.add(key=key, value=str(value))


def stored_at(initializer: TensorProto) -> tuple[str | None, int, int]:
    """(location, offset, length) of an external-data initializer; (None, 0, 0) for one stored in its graph."""
    if initializer.data_location != TensorProto.EXTERNAL:
        return None, 0, 0
    entry = {item.key: item.value for item in initializer.external_data}
    return entry["location"], int(entry.get("offset", 0)), int(entry["length"])
