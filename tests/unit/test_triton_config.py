"""Generated config.pbtxt files round-trip through Triton's own ModelConfig schema."""

from tritonclient.grpc import model_config_pb2 as pb

from export import triton_config as tc
from pipeline import contract as C

PROV = {"mlflow_name": "x", "mlflow_version": "7", "mlflow_run_id": "r", "sha256": "s"}


def test_cpu_configs_wrap_onnxruntime_in_the_python_backend():
    for build in (tc.detector_config, tc.multitask_config):
        cfg = tc.parse_pbtxt(tc.to_pbtxt(build("cpu", 7, PROV)))
        assert cfg.backend == "python"
        assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
        assert cfg.parameters["onnx_file"].string_value == "model.onnx"
        assert list(cfg.version_policy.specific.versions) == [7]
        assert cfg.parameters["mlflow_version"].string_value == "7"
        assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
        assert max(cfg.dynamic_batching.preferred_batch_size) <= cfg.max_batch_size


def test_gpu_configs_use_the_onnxruntime_backend_on_a_gpu():
    for tensorrt in (False, True):
        t = tc.Tuning(tensorrt=tensorrt)
        cfg = tc.parse_pbtxt(tc.to_pbtxt(tc.multitask_config("gpu", 3, PROV, t)))
        assert cfg.backend == "onnxruntime"
        assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
        accelerators = cfg.optimization.execution_accelerators.gpu_execution_accelerator
        assert [a.name for a in accelerators] == (["tensorrt"] if tensorrt else [])
        assert [i.name for i in cfg.input] == [C.MT_INPUT]
        assert [o.name for o in cfg.output] == [C.MT_EMBEDDING, C.MT_AGE, C.MT_GENDER]


def test_pipeline_config_takes_bytes_and_batches_requests():
    cfg = tc.parse_pbtxt(tc.to_pbtxt(tc.pipeline_config()))
    assert cfg.backend == "python" and cfg.max_batch_size > 1
    image = next(i for i in cfg.input if i.name == C.PL_IMAGE)
    assert image.data_type == pb.TYPE_STRING and not image.optional
    assert all(i.optional for i in cfg.input if i.name != C.PL_IMAGE)
    assert {o.name for o in cfg.output} >= {C.PL_BOXES, C.PL_EMBEDDINGS, C.PL_AGE, C.PL_GENDER}
    assert cfg.parameters["detector_model"].string_value == C.DETECTOR


def test_pipeline_config_carries_the_small_face_plan():
    cfg = tc.parse_pbtxt(tc.to_pbtxt(tc.pipeline_config(tc.Tuning(min_face_size=64))))
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["min_face_size"] == "64" and int(params["tile_size"]) % 32 == 0
    # a pipeline request of tiles must fit in one detector batch, so the batcher can merge them
    assert 0 < int(params["detector_request_batch"]) <= tc.Tuning().detector_max_batch


def test_gpu_configs_follow_the_triton_documentation():
    """docs/deployment.md cites the source of each choice; nothing here ran on a GPU."""
    det = tc.parse_pbtxt(tc.to_pbtxt(tc.detector_config("gpu", 2, PROV)))
    mt = tc.parse_pbtxt(tc.to_pbtxt(tc.multitask_config("gpu", 3, PROV, int8=True)))
    for cfg in (det, mt):
        group = cfg.instance_group[0]
        assert group.count == 2 and not group.gpus  # per GPU, on every GPU
        assert not cfg.dynamic_batching.preferred_batch_size
        assert cfg.model_warmup[0].batch_size == 1 and cfg.model_warmup[0].inputs
    assert list(det.model_warmup[0].inputs[C.DET_INPUT].dims) == [C.DETECTOR_SIZE, C.DETECTOR_SIZE, 3]
    # the detector's spatial shapes vary with the detection plan: CUDA EP, no TensorRT profile
    assert not det.optimization.execution_accelerators.gpu_execution_accelerator
    trt = mt.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "INT8"
    assert trt.parameters["trt_engine_cache_enable"] == "1" and trt.parameters["trt_engine_cache_path"] == "/trt-cache"
    assert trt.parameters["trt_engine_cache_prefix"] == f"{C.MULTITASK}_v3"
    chip = f"{C.CHIP_SIZE}x{C.CHIP_SIZE}x3"
    assert trt.parameters["trt_profile_min_shapes"] == f"{C.MT_INPUT}:1x{chip}"
    assert trt.parameters["trt_profile_max_shapes"] == f"{C.MT_INPUT}:{mt.max_batch_size}x{chip}"
    fp32 = tc.parse_pbtxt(tc.to_pbtxt(tc.multitask_config("gpu", 3, PROV, int8=False)))
    assert fp32.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters[
        "precision_mode"] == "FP16"
    cuda_only = tc.parse_pbtxt(tc.to_pbtxt(tc.multitask_config("gpu", 3, PROV, tc.Tuning(tensorrt=False))))
    assert not cuda_only.optimization.execution_accelerators.gpu_execution_accelerator


def test_quantised_graphs_are_told_apart(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    plain = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(plain, tmp_path / "fp32.onnx")
    scale = onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = onnx.numpy_helper.from_array(np.array(0, np.uint8), "z")
    q = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
                          "g", [x], [y], initializer=[scale, zero])
    onnx.save(helper.make_model(q), tmp_path / "int8.onnx")
    assert tc.has_qdq(tmp_path / "int8.onnx") and not tc.has_qdq(tmp_path / "fp32.onnx")


def test_every_queue_is_bounded_and_drops_requests_that_waited_too_long():
    configs = [tc.pipeline_config()] + [build(target, 1, PROV) for build in (tc.detector_config, tc.multitask_config)
                                        for target in tc.TARGETS]
    for cfg in (tc.parse_pbtxt(tc.to_pbtxt(c)) for c in configs):
        policy = cfg.dynamic_batching.default_queue_policy
        assert 0 < policy.max_queue_size <= 256, cfg.name
        assert 0 < policy.default_timeout_microseconds <= 30_000_000, cfg.name
        assert policy.timeout_action == pb.ModelQueuePolicy.REJECT and policy.allow_timeout_override


def test_pipeline_config_carries_the_api_decode_caps():
    """face_pipeline reads its decode caps back from the parameters the API's settings wrote."""
    from core.settings import UploadSettings
    from pipeline.limits import DecodeLimits

    limits = UploadSettings(max_pixels=1_000_000, max_jpeg_scans=4, max_decode_bytes=50_000_000,
                            min_side=20).decode_limits()
    cfg = tc.parse_pbtxt(tc.to_pbtxt(tc.pipeline_config(decode=limits)))
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert DecodeLimits.from_params(params) == limits == DecodeLimits(1_000_000, 20, 4, 50_000_000)
