"""Graph rewrites of export/convert on a small synthetic Conv-PRelu network (no model files):
the PRelu decomposition and the int8 lookup activations keep the numbers and change the ops
onnxruntime runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export import convert

C, SIZE = 16, 12


def conv_prelu_net() -> onnx.ModelProto:
    """x [N,3,12,12] -> (Conv 3x3 -> PRelu) x 3 -> Conv 1x1; slopes in [-0.8, 1.2] like SFace's."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for k, cin in enumerate((3, C, C)):
        w, b, a = f"w{k}", f"b{k}", f"a{k}"
        inits += [numpy_helper.from_array(rng.normal(0, 0.3, (C, cin, 3, 3)).astype(np.float32), w),
                  numpy_helper.from_array(rng.normal(0, 0.1, C).astype(np.float32), b),
                  numpy_helper.from_array(rng.uniform(-0.8, 1.2, (C, 1, 1)).astype(np.float32), a)]
        nodes += [helper.make_node("Conv", [x, w, b], [f"c{k}"], name=f"conv{k}", pads=[1, 1, 1, 1]),
                  helper.make_node("PRelu", [f"c{k}", a], [f"p{k}"], name=f"prelu{k}")]
        x = f"p{k}"
    inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (4, C, 1, 1)).astype(np.float32), "w_out"))
    nodes.append(helper.make_node("Conv", [x, "w_out"], ["y"], name="conv_out"))
    graph = helper.make_graph(nodes, "net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, SIZE, SIZE])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def optimized_ops(model: onnx.ModelProto, tmp_path) -> set[str]:
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (24, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def int8(images) -> onnx.ModelProto:
    return convert.quantize_int8(convert.decompose_prelu(conv_prelu_net()), images[:16])


def test_prelu_decomposition_computes_prelu(images):
    plain = conv_prelu_net()
    rewritten = convert.decompose_prelu(conv_prelu_net())
    ops = [n.op_type for n in rewritten.graph.node]
    assert "PRelu" not in ops and ops.count("Clip") == 3 and ops.count("Relu") == 3
    np.testing.assert_allclose(run(rewritten, images), run(plain, images), rtol=1e-5, atol=1e-5)


def test_lookup_activations_keep_the_int8_numbers_and_drop_the_fp32_round_trips(int8, images, tmp_path):
    table = convert.lookup_activations(onnx.ModelProto.FromString(int8.SerializeToString()))
    # conv0 stays fp32 (quantize_int8 keeps the first and last weighted layers), so its PRelu
    # has no DequantizeLinear in front: the two later PRelus are rewritten, branch by branch
    leaky = [n for n in table.graph.node if n.op_type == "LeakyRelu"]
    assert sorted(helper.get_attribute_value(n.attribute[0]) for n in leaky) == [0.0, 0.0, 1.0, 1.0]
    assert np.array_equal(run(table, images), run(int8, images))
    before, after = optimized_ops(int8, tmp_path), optimized_ops(table, tmp_path)
    assert "QLinearLeakyRelu" in after and "QLinearLeakyRelu" not in before
    assert "QLinearConv" in after


def test_a_clip_whose_quantisation_does_not_cut_at_zero_is_left_alone(int8, images):
    model = onnx.ModelProto.FromString(int8.SerializeToString())
    consumer = {i: n for n in model.graph.node for i in n.input}
    clip = next(n for n in model.graph.node if n.op_type == "Clip" and n.name.startswith("p2"))
    zp_name = consumer[clip.output[0]].input[2]
    zp = next(i for i in model.graph.initializer if i.name == zp_name)
    assert int(numpy_helper.to_array(zp)) == 255  # the negative branch ends at the top of uint8
    zp.CopyFrom(numpy_helper.from_array(np.array(250, np.uint8), zp_name))
    table = convert.lookup_activations(model)
    kept = {n.name: n.op_type for n in table.graph.node}
    assert kept[clip.name] == "Clip" and kept["p1/neg"] == "LeakyRelu"
