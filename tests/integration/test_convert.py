"""Model conversion: the folded and merged graphs compute what the shipped models compute."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from core.settings import PROJECT_ROOT
from export import bootstrap, convert, sources
from pipeline import contract as C

CACHE = PROJECT_ROOT / "var" / "cache" / "wheels"


@pytest.fixture(scope="module")
def files():
    return sources.fetch_pretrained(CACHE, progress=lambda m: None)


@pytest.fixture(scope="module")
def chips(built_models):
    photos = sources.fetch_calibration_photos(CACHE, progress=lambda m: None)
    return bootstrap.calibration_chips(built_models[C.DETECTOR], photos)


@pytest.fixture(scope="module")
def fp32_multitask(files, tmp_path_factory):
    return convert.build_multitask(files, tmp_path_factory.mktemp("fp32") / "mt.onnx")


def run(path, chips):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {C.MT_INPUT: chips})


def test_multitask_embedding_equals_the_shipped_int8_sface_under_opencv(fp32_multitask, files, chips):
    emb, age, gender = run(fp32_multitask, chips)
    net = cv2.dnn.readNetFromONNX(str(files["sface_int8bq"]))
    o = C.CHIP_OFFSET
    crops = np.ascontiguousarray(chips[:, o:o + 112, o:o + 112].transpose(0, 3, 1, 2), np.float32)
    ref = []
    for crop in crops:  # the shipped graph has a fixed batch of 1
        net.setInput(crop[None])
        ref.append(net.forward()[0])
    ref = np.stack(ref)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.min(np.sum(ref * emb, axis=1)) > 0.9999
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.allclose(gender.sum(1), 1, atol=1e-4) and np.all((age > 0) & (age < 100))
    # a batch gives the same answers as one face at a time
    one = np.concatenate([run(fp32_multitask, chips[i:i + 1])[0] for i in range(len(chips))])
    assert np.abs(one - emb).max() < 1e-4


def test_conversion_is_deterministic(built_models, files, chips, tmp_path):
    again = convert.build_multitask(files, tmp_path / "mt.onnx", calibration_chips=chips)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(again) == digest(built_models[C.MULTITASK])


def test_deployed_int8_graph_stays_close_to_fp32(built_models, fp32_multitask, chips):
    import onnx

    int8 = built_models[C.MULTITASK]
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "QuantizeLinear" in ops  # the default build is the int8 one
    fp, q = run(fp32_multitask, chips), run(int8, chips)
    assert np.min(np.sum(fp[0] * q[0], axis=1)) > 0.95
    # only SFace is quantised: age and gender are the fp32 numbers
    assert np.abs(fp[1] - q[1]).max() < 1e-4 and np.abs(fp[2] - q[2]).max() < 1e-5


def test_int8_sface_prelus_run_as_table_lookups(built_models):
    """Both branches of every quantised PRelu (Relu(x) + a * Clip(x, max=0)) are LeakyRelus
    between DequantizeLinear and QuantizeLinear (onnxruntime: QLinearLeakyRelu); only the PRelu
    behind the fp32 first convolution keeps Relu and Clip."""
    import collections

    import onnx

    nodes = [n for n in onnx.load(str(built_models[C.MULTITASK])).graph.node if n.name.startswith("sface/")]
    ops = collections.Counter(n.op_type for n in nodes)
    assert ops["PRelu"] == 0 and ops["Relu"] == ops["Clip"] == 1
    assert ops["LeakyRelu"] == 2 * (ops["Add"] - 1)  # one Add per PRelu joins its two branches
    producer = {o: n.op_type for n in nodes for o in n.output}
    assert all(producer[n.input[0]] == "DequantizeLinear" for n in nodes if n.op_type == "LeakyRelu")


def test_subnormal_weights_are_flushed_without_changing_outputs(built_models, files):
    import onnx
    from onnx import numpy_helper

    def subnormals(model):
        return sum(int(np.count_nonzero((w != 0) & (np.abs(w) < np.finfo(np.float32).tiny)))
                   for w in map(numpy_helper.to_array, model.graph.initializer) if w.dtype == np.float32)

    shipped = onnx.load(str(files["age"]))
    assert subnormals(shipped) > 1000  # the reason for the flush: the age model ships thousands
    flushed = convert.flush_denormals(onnx.load(str(files["age"])))
    assert subnormals(flushed) == 0
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 3, 64, 64)).astype(np.float32)
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
            for m in (shipped, flushed)]
    assert np.abs(outs[0] - outs[1]).max() < 1e-6
    for name in (C.DETECTOR, C.MULTITASK):
        assert subnormals(onnx.load(str(built_models[name]))) == 0


def test_gender_is_temperature_scaled_without_changing_a_decision(built_models, chips):
    """The served P(male) is sigmoid(GENDER_LOGIT_SCALE * logit(face-api's mirror-averaged P))."""
    import onnx

    from export import metrics

    model = onnx.load(str(built_models[C.MULTITASK]))
    model.graph.output.append(onnx.helper.make_tensor_value_info("gender_raw", onnx.TensorProto.FLOAT, None))
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    gender, raw = s.run([C.MT_GENDER, "gender_raw"], {C.MT_INPUT: chips})
    assert convert.GENDER_LOGIT_SCALE != 1
    assert np.allclose(gender[:, 1], metrics.scale_logit(raw[:, 1], convert.GENDER_LOGIT_SCALE), atol=1e-5)
    assert np.allclose(gender.sum(1), 1, atol=1e-5)
    assert np.array_equal(gender.argmax(1), raw.argmax(1))
