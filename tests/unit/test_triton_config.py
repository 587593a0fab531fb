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
