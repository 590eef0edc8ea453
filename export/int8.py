"""Row-wise int8 for every linear layer of an ONNX graph, so that a row's output never depends on its batch mates.

A generic pass over the graph, not over names: every ``MatMul`` (and ``Gemm``) whose second input is a constant 2-D
float weight (an initializer, a ``Constant`` node, or either transposed, as the tied output projection is exported)
becomes::

    scale = max(|x| over the last axis) / 127                          one scale per row (per token), as CTranslate2
    q     = uint8(round(x / scale) + 128)                              shifted into uint8: onnxruntime's fast kernel
    y     = MatMulIntegerToFloat(q, w_int8, 1, w_scale, 128) * scale   7-bit weights, one scale per output column

(``com.microsoft.MatMulIntegerToFloat``; signed int8 activations take a slow path, see
``/work/shared/probes/int8_rowwise.py``). The weights use 7 bits, [-63, 63]: on x86 CPUs without VNNI (AVX2 only,
e.g. many AMD EPYC), onnxruntime's uint8 x int8 kernel adds pairs of products in 16-bit lanes (``vpmaddubsw``),
which saturate once 255 * |w| * 2 passes 32,767; with |w| <= 63 every sum fits and the integer product is exact on
every CPU (full 8-bit weights gave wrong products there, off by up to 10^6 on extreme inputs). The layers that read the same activation (the query, key and value
projections; the cross-attention keys and values of every decoder layer) share one quantization and one integer
matmul over their weights side by side, split back into each layer's output. The integer product is exact and
every other operation acts on one row, so a row's result is bitwise the same alone or in any batch. Float weights
that nothing else reads are dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MICROSOFT = "com.microsoft"
PREFIX = "int8"  # every name the pass adds starts with it


WEIGHT_LEVELS = 63  # weights in [-63, 63]: exact on CPUs whose kernel sums two uint8 x int8 products in 16 bits


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A [K, N] float weight as int8 [K, N] in [-63, 63] and one float32 scale per output column [N] (absolute max /
    63)."""
    scale = np.abs(weight).max(axis=0) / WEIGHT_LEVELS  # [N]
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero column stays zero with any scale
    return np.clip(np.round(weight / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8), scale


class _Rewriter:
    """One graph's rewrite: the constants it reads and the initializers it adds."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        self.initializers = {tensor.name: tensor for tensor in self.graph.initializer}
        self.producers = {output: node for node in self.graph.node for output in node.output}
        self.added: list[onnx.TensorProto] = []
        self.weights: dict[tuple, tuple[str, str]] = {}  # ((constant, transposed), ...) -> (int8, column scales)
        self.constants: dict[str, str] = {}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor name (initializer or Constant node), else None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def weight_source(self, name: str) -> tuple[str, bool] | None:
        """(constant name, transposed) when name is a 2-D float constant or its transpose, else None."""
        node = self.producers.get(name)
        transposed = node is not None and node.op_type == "Transpose" and [
            list(a.ints) for a in node.attribute if a.name == "perm"] in ([[1, 0]], [])
        source = node.input[0] if transposed else name
        value = self.constant(source)
        if value is None or value.ndim != 2 or value.dtype != np.float32:
            return None
        return source, transposed

    def shared(self, value, dtype) -> str:
        """The name of a constant scalar or vector (one initializer per value)."""
        array = np.array(value, dtype=dtype)
        key = f"{array.dtype}:{array.shape}:{array.tolist()!r}"
        if key not in self.constants:
            self.constants[key] = f"{PREFIX}/const_{len(self.constants)}"
            self.added.append(numpy_helper.from_array(array, self.constants[key]))
        return self.constants[key]

    def quantize_weights(self, sources: tuple[tuple[str, bool], ...]) -> tuple[str, str]:
        """These weights side by side as one int8 [K, N1 + N2 + ...] and its column scales."""
        if sources not in self.weights:
            value = np.concatenate([self.constant(name).T if transposed else self.constant(name)
                                    for name, transposed in sources], axis=1)  # [K, N1 + N2 + ...]
            weight_q, scale = quantize_weight(value)
            base = f"{PREFIX}/" + "+".join(name + (".T" if transposed else "") for name, transposed in sources)
            self.added += [numpy_helper.from_array(weight_q, f"{base}/weight"),
                           numpy_helper.from_array(scale, f"{base}/scale")]
            self.weights[sources] = f"{base}/weight", f"{base}/scale"
        return self.weights[sources]

    def quantize_rows(self, activation: str, nodes: list[onnx.NodeProto]) -> tuple[str, str]:
        """Append the nodes quantizing activation [..., K] row by row: (uint8 [..., K], scales [..., 1])."""
        base = f"{PREFIX}/{activation}"
        reduce = ({"inputs": [f"{base}/abs", self.shared([-1], np.int64)]} if self.opset >= 18
                  else {"inputs": [f"{base}/abs"], "axes": [-1]})
        nodes += [
            helper.make_node("Abs", [activation], [f"{base}/abs"]),
            helper.make_node("ReduceMax", reduce.pop("inputs"), [f"{base}/max"], keepdims=1, **reduce),  # [..., 1]
            helper.make_node("Mul", [f"{base}/max", self.shared(1 / 127, np.float32)], [f"{base}/raw_scale"]),
            helper.make_node("Max", [f"{base}/raw_scale", self.shared(np.finfo(np.float32).tiny, np.float32)],
                             [f"{base}/scale"]),  # an all-zero row divides by the smallest float: zeros stay zeros
            helper.make_node("Div", [activation, f"{base}/scale"], [f"{base}/scaled"]),  # in [-127, 127]
            # + 128.5, then Cast's truncation: round(x) + 128 in uint8, one pass fewer than Round
            helper.make_node("Add", [f"{base}/scaled", self.shared(128.5, np.float32)], [f"{base}/shifted"]),
            helper.make_node("Cast", [f"{base}/shifted"], [f"{base}/uint8"], to=TensorProto.UINT8),
        ]
        return f"{base}/uint8", f"{base}/scale"

    def weight_of(self, node: onnx.NodeProto) -> tuple[str, bool] | None:
        """The (constant, transposed) weight of a linear layer node, or None when node is not one."""
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type not in ("MatMul", "Gemm") or attributes.get("transA", 0):
            return None
        source = self.weight_source(node.input[1])
        if source is not None and attributes.get("transB", 0):
            return source[0], not source[1]
        return source

    def linears(self, group: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        """The int8 nodes replacing linear layers that read one activation: one integer matmul over their weights
        side by side (the query, key and value projections become one), split back into each layer's output."""
        nodes: list[onnx.NodeProto] = []
        rows, row_scale = self.quantize_rows(group[0].input[0], nodes)
        weight, column_scale = self.quantize_weights(tuple(self.weight_of(node) for node in group))
        base = f"{PREFIX}/{group[0].output[0]}"
        outputs = [node.output[0] if node.op_type == "MatMul" else f"{PREFIX}/{node.output[0]}/product"
                   for node in group]
        product = outputs[0] if len(group) == 1 else f"{base}/products"
        nodes += [helper.make_node("MatMulIntegerToFloat", [rows, weight, self.shared(1.0, np.float32), column_scale,
                                                            self.shared(128, np.uint8)], [f"{base}/columns"],
                                   domain=MICROSOFT),
                  helper.make_node("Mul", [f"{base}/columns", row_scale], [product])]
        if len(group) > 1:
            widths = [int(self.constant(name).shape[0 if transposed else 1]) for name, transposed in
                      (self.weight_of(node) for node in group)]
            split = ({"inputs": [product, self.shared(widths, np.int64)]} if self.opset >= 13
                     else {"inputs": [product], "split": widths})
            nodes.append(helper.make_node("Split", split.pop("inputs"), outputs, axis=-1, **split))
        for node, output in zip(group, outputs):
            if node.op_type == "Gemm":
                nodes += self.gemm_rest(node, output)
        return nodes

    def gemm_rest(self, node: onnx.NodeProto, product: str) -> list[onnx.NodeProto]:
        """Gemm's alpha A B + beta C, given A B."""
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = attributes.get("alpha", 1.0), attributes.get("beta", 1.0)
        base, nodes = f"{PREFIX}/{node.output[0]}", []
        if alpha != 1.0:
            nodes.append(helper.make_node("Mul", [product, self.shared(alpha, np.float32)], [f"{base}/alpha"]))
            product = f"{base}/alpha"
        if len(node.input) < 3 or not node.input[2]:
            return nodes + [helper.make_node("Identity", [product], [node.output[0]])]
        bias = node.input[2]
        if beta != 1.0:
            nodes.append(helper.make_node("Mul", [bias, self.shared(beta, np.float32)], [f"{base}/beta"]))
            bias = f"{base}/beta"
        return nodes + [helper.make_node("Add", [product, bias], [node.output[0]])]


def drop_unused(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs is read, and initializers nothing reads (in place)."""
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [tensor for tensor in graph.initializer if tensor.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def quantize_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of model with every linear layer row-wise int8, and how many layers were rewritten."""
    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    rewriter = _Rewriter(quantized)
    groups: dict[str, list[onnx.NodeProto]] = {}  # activation -> the linear layers reading it, in graph order
    for node in quantized.graph.node:
        if rewriter.weight_of(node) is not None:
            groups.setdefault(node.input[0], []).append(node)
    nodes = []
    for node in quantized.graph.node:
        group = groups.get(node.input[0]) if rewriter.weight_of(node) is not None else None
        if group is None:
            nodes.append(node)
        elif node is group[0]:  # the whole group where its first layer was: the activation exists by then
            nodes += rewriter.linears(group)
    del quantized.graph.node[:]
    quantized.graph.node.extend(nodes)
    quantized.graph.initializer.extend(rewriter.added)
    drop_unused(quantized.graph)
    rewritten = sum(len(group) for group in groups.values())
    if rewritten and not any(o.domain == MICROSOFT for o in quantized.opset_import):
        quantized.opset_import.append(helper.make_opsetid(MICROSOFT, 1))
    return quantized, rewritten


def quantize_file(source: Path, target: Path) -> int:
    """Write source's graph with row-wise int8 linear layers to target; returns how many nodes were rewritten."""
    quantized, rewritten = quantize_model(onnx.load(str(source)))
    onnx.save(quantized, str(target))
    return rewritten
