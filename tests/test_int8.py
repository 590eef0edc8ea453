"""The row-wise int8 graph pass (export/int8.py) on hand-made graphs: every weight layout it rewrites, a result
close to float32, and rows that do not depend on each other. The exported bundles' int8 graphs: test_export.py."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs onnx: pip install -e '.[export]'")
import onnxruntime  # noqa: E402 - with onnx
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from export.int8 import quantize_model, quantize_weight  # noqa: E402

K, N = 16, 24


def linear_graph(rng) -> onnx.ModelProto:
    """x [rows, K] through the layouts an exporter writes: MatMul with an initializer, with a transposed one (a tied
    output projection), Gemm with transB and a bias, and a MatMul of two activations that must stay float."""
    weight = rng.standard_normal((K, N)).astype(np.float32)
    embedding = rng.standard_normal((N, K)).astype(np.float32)  # [N, K], read transposed
    gemm_weight = rng.standard_normal((N, K)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "weight"], ["plain"]),
        helper.make_node("Transpose", ["embedding"], ["embedding_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "embedding_t"], ["tied"]),
        helper.make_node("Gemm", ["x", "gemm_weight", "bias"], ["gemm"], transB=1, alpha=0.5),
        helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "x_t"], ["gram"]),  # no constant weight: left alone
    ]
    graph = helper.make_graph(
        nodes, "linears", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["rows", N]) for name in ("plain", "tied", "gemm")]
        + [helper.make_tensor_value_info("gram", TensorProto.FLOAT, ["rows", "rows"])],
        [numpy_helper.from_array(value, name) for name, value in
         (("weight", weight), ("embedding", embedding), ("gemm_weight", gemm_weight), ("bias", bias))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_every_constant_weight_layout_is_rewritten_and_close_to_float32():
    rng = np.random.default_rng(0)
    model = linear_graph(rng)
    quantized, rewritten = quantize_model(model)
    onnx.checker.check_model(quantized, full_check=True)
    assert rewritten == 3
    operators = [node.op_type for node in quantized.graph.node]
    assert operators.count("MatMul") == 1 and "Gemm" not in operators
    # the three weights read x: one quantization, one integer matmul over [K, 3N], split into the three outputs
    assert operators.count("Abs") == operators.count("MatMulIntegerToFloat") == operators.count("Split") == 1
    initializers = {tensor.name for tensor in quantized.graph.initializer}
    assert not {"weight", "embedding", "gemm_weight"} & initializers  # float weights nothing reads are dropped
    x = rng.standard_normal((7, K)).astype(np.float32)
    for reference, result in zip(run(model, x), run(quantized, x)):
        np.testing.assert_allclose(result, reference, atol=0.05 * np.abs(reference).max())


def test_a_row_gives_the_same_bits_alone_and_in_any_batch():
    rng = np.random.default_rng(1)
    quantized, _ = quantize_model(linear_graph(rng))
    x = rng.standard_normal((9, K)).astype(np.float32) * np.linspace(0.01, 100, 9, dtype=np.float32)[:, None]
    x[4] = 0  # an all-zero row stays zero
    batched = run(quantized, x)
    for row in range(len(x)):
        alone = run(quantized, x[row : row + 1])
        for name, (whole, single) in enumerate(zip(batched[:3], alone[:3])):
            np.testing.assert_array_equal(single[0], whole[row], err_msg=f"output {name}, row {row}")
    assert not batched[0][4].any()


def test_weights_get_one_scale_per_output_column():
    weight = np.array([[1.0, 0.0, -0.5], [-2.0, 0.0, 0.25]], dtype=np.float32)  # [K=2, N=3]
    weight_q, scale = quantize_weight(weight)
    np.testing.assert_allclose(scale, [2 / 63, 1.0, 0.5 / 63])
    np.testing.assert_array_equal(weight_q, [[31, 0, -63], [-63, 0, 31]])  # 7 bits; 1 / float32(2 / 63) is 31.4999


def test_the_integer_product_is_exact_at_the_extremes_on_this_cpu():
    """Every activation at the row's maximum (uint8 255 or 1) against weights at +-63: the int8 result equals the
    same quantized numbers multiplied in float64. On CPUs without VNNI onnxruntime sums two uint8 x int8 products in
    16 bits, which 8-bit weights (+-127) overflow: this is the test that caught it on an AVX2-only machine."""
    weight = np.where(np.arange(K * N).reshape(K, N) % 3 == 0, -1.0, 1.0).astype(np.float32)  # [K, N], all at +-max
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", N])], [numpy_helper.from_array(weight, "weight")])
    quantized, _ = quantize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    x = np.stack([np.full(K, 3.0), np.full(K, -3.0), np.where(np.arange(K) % 2, 3.0, -3.0)]).astype(np.float32)
    np.testing.assert_allclose(run(quantized, x)[0], x.astype(np.float64) @ weight, rtol=1e-6)
