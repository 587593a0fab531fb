"""face-api.js's AgeGenderNet (npm ``@vladmandic/face-api``, MIT) rebuilt as an ONNX graph.

The package ships TensorFlow.js weights (a JSON manifest plus one binary, uint8-quantised),
not a graph: the network is code (``src/xception/TinyXception.ts`` with two main blocks and
``src/ageGenderNet/AgeGenderNet.ts``). This module reads the weights and writes the same
network with ONNX operators, so no TensorFlow is needed at build time.

Graph: ``images`` float32 [N,3,112,112] RGB 0..255 (the graph subtracts face-api's mean and
divides by 255 itself) -> ``age`` [N,1] years (regression) and ``gender`` [N,2] softmax,
ordered (male, female) as face-api has it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto, helper, numpy_helper

INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)
MAIN_BLOCKS = 2


def load_weights(manifest_path: Path) -> dict[str, np.ndarray]:
    """tfjs weights manifest -> float32 arrays (uint8 entries are min + q * scale)."""
    weights = {}
    for group in json.loads(Path(manifest_path).read_text()):
        buf = b"".join((Path(manifest_path).parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"]))
            q = w.get("quantization")
            if q:
                if q["dtype"] != "uint8":
                    raise ValueError(f"{w['name']}: unsupported quantisation {q['dtype']}")
                a = np.frombuffer(buf, np.uint8, n, offset).astype(np.float32) * q["scale"] + q["min"]
                offset += n
            else:
                a = np.frombuffer(buf, np.float32, n, offset).copy()
                offset += 4 * n
            weights[w["name"]] = a.reshape(w["shape"]).astype(np.float32)
        if offset != len(buf):
            raise ValueError(f"{manifest_path}: {len(buf) - offset} bytes of weights left over")
    return weights


def _same_pads(kernel: int, stride: int, size: int) -> list[int]:
    """TensorFlow's 'same' padding: the extra row/column goes to the bottom/right."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


class _Builder:
    def __init__(self, weights: dict[str, np.ndarray]):
        self.w, self.nodes, self.inits, self.n = weights, [], [], 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self.n += 1
        out = f"{op_type.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x: str, p: str, stride: int, size: int) -> str:
        f = self.w[f"{p}/filters"]  # HWIO
        k = f.shape[0]
        return self.op("Conv", [x, self.const(f"{p}/filters", f.transpose(3, 2, 0, 1)),
                                self.const(f"{p}/bias", self.w[f"{p}/bias"])],
                       kernel_shape=[k, k], strides=[stride, stride], pads=_same_pads(k, stride, size))

    def separable(self, x: str, p: str) -> str:
        dw = self.w[f"{p}/depthwise_filter"]  # [3,3,C,1]
        c = dw.shape[2]
        y = self.op("Conv", [x, self.const(f"{p}/depthwise", dw.transpose(2, 3, 0, 1).reshape(c, 1, 3, 3))],
                    kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c)
        pw = self.w[f"{p}/pointwise_filter"]  # [1,1,C,O]
        return self.op("Conv", [y, self.const(f"{p}/pointwise", pw.transpose(3, 2, 0, 1)),
                                self.const(f"{p}/bias", self.w[f"{p}/bias"])], kernel_shape=[1, 1])

    def reduction(self, x: str, p: str, size: int, activate_input: bool = True) -> str:
        out = self.op("Relu", [x]) if activate_input else x
        out = self.separable(out, f"{p}/separable_conv0")
        out = self.separable(self.op("Relu", [out]), f"{p}/separable_conv1")
        out = self.op("MaxPool", [out], kernel_shape=[3, 3], strides=[2, 2], pads=_same_pads(3, 2, size))
        return self.op("Add", [out, self.conv(x, f"{p}/expansion_conv", 2, size)])

    def main(self, x: str, p: str) -> str:
        out = x
        for i in range(3):
            out = self.separable(self.op("Relu", [out]), f"{p}/separable_conv{i}")
        return self.op("Add", [out, x])


def build(manifest_path: Path) -> ModelProto:
    b = _Builder(load_weights(manifest_path))
    x = b.op("Sub", ["images", b.const("mean_rgb", np.asarray(MEAN_RGB, np.float32).reshape(1, 3, 1, 1))])
    x = b.op("Mul", [x, b.const("inv_255", np.array(1 / 255, np.float32))])
    x = b.op("Relu", [b.conv(x, "entry_flow/conv_in", 2, INPUT_SIZE)])  # 56 x 56
    x = b.reduction(x, "entry_flow/reduction_block_0", 56, activate_input=False)  # 28
    x = b.reduction(x, "entry_flow/reduction_block_1", 28)  # 14
    for i in range(MAIN_BLOCKS):
        x = b.main(x, f"middle_flow/main_block_{i}")
    x = b.reduction(x, "exit_flow/reduction_block", 14)  # 7
    x = b.op("Relu", [b.separable(x, "exit_flow/separable_conv")])
    x = b.op("Flatten", [b.op("AveragePool", [x], kernel_shape=[7, 7], strides=[2, 2])], axis=1)
    b.nodes.append(helper.make_node("Gemm", [x, b.const("fc_age_w", b.w["fc/age/weights"]),
                                            b.const("fc_age_b", b.w["fc/age/bias"])], ["age"]))
    logits = b.op("Gemm", [x, b.const("fc_gender_w", b.w["fc/gender/weights"]),
                           b.const("fc_gender_b", b.w["fc/gender/bias"])])
    b.nodes.append(helper.make_node("Softmax", [logits], ["gender"], axis=-1))
    graph = helper.make_graph(
        b.nodes, "faceapi_age_gender",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("age", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("gender", TensorProto.FLOAT, ["N", 2])],
        b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model
