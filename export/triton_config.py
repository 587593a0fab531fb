"""Triton config.pbtxt for our three models, built as protobuf messages.

Building through Triton's own ModelConfig schema (shipped in tritonclient) means a config
that serialises here is one Triton can parse: a typo in a field name fails at export time,
not when the server starts.

Two targets:
- ``cpu``: what runs locally and in CI: python backend wrapping onnxruntime (the
  nvidia-pytriton wheel has no other backend).
- ``gpu``: the NGC tritonserver image: onnxruntime backend, KIND_GPU, TensorRT EP by default.
The BLS ``face_pipeline`` is a python model on both targets (it runs on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from pipeline import contract as C
from pipeline.detect import MIN_FACE_SIZE, SCORE_THRESHOLD, TILE
from pipeline.limits import DecodeLimits

TARGETS = ("cpu", "gpu")

FP32, INT32, UINT8, BYTES = pb.TYPE_FP32, pb.TYPE_INT32, pb.TYPE_UINT8, pb.TYPE_STRING
_PB_TYPES = {"float32": FP32, "int32": INT32, "uint8": UINT8}


@dataclass(frozen=True)
class Tuning:
    """Batching and threading knobs, chosen by the benchmarks in loadtests/ (see README)."""

    # 8 tiles of 640 px (3.3 MP) hold about the pixels 16 letterboxes of 480 px did: the memory
    # of a detector batch stays where it was, and on this CPU a larger batch bought no speed
    # (per-image time at batch 1/4/16 within noise, README "Small faces")
    detector_max_batch: int = 8
    detector_preferred: tuple[int, ...] = (4, 8)
    multitask_max_batch: int = 32
    multitask_preferred: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = 1000
    model_instances: int = 2
    pipeline_max_batch: int = 4
    pipeline_instances: int = 3
    pipeline_queue_delay_us: int = 1000
    ort_threads: int = 1
    # Bounded queues: past max_queue_size Triton refuses at once (the API answers 503), and a
    # request that waited longer than the timeout is dropped, not run for a client that has
    # gone (the API passes its own deadline per request, allow_timeout_override).
    pipeline_max_queue: int = 64
    model_max_queue: int = 64
    pipeline_queue_timeout_us: int = 15_000_000
    # longer than the pipeline's: a sub-request of an admitted photo is not dropped half-way
    model_queue_timeout_us: int = 30_000_000
    detector_size: int = C.DETECTOR_SIZE
    score_threshold: float = SCORE_THRESHOLD
    # small faces: the smallest face the detection plan covers (px of the original photo), the
    # tile side, and how the pipeline sends a large photo's tiles: requests of 4 tiles, 4 in
    # flight, which the detector's dynamic batcher merges up to detector_max_batch
    # 24 (default): the two-phase plan (the letterbox first, the rest only for photos that need
    # it; README, "Small faces"); 0: the one 480 px pass of a full-size decode per photo, as before
    min_face_size: int = MIN_FACE_SIZE
    tile_size: int = TILE
    detector_request_batch: int = 4
    detector_requests_in_flight: int = 4
    # gpu target only (docs/deployment.md cites the Triton documentation for each choice)
    tensorrt: bool = True
    gpu_instances: int = 2  # per GPU: overlaps transfers with compute (optimization.md)
    trt_cache_dir: str = "/trt-cache"  # a writable volume: engines survive restarts


def _bound_queue(cfg: pb.ModelConfig, max_size: int, timeout_us: int) -> None:
    policy = cfg.dynamic_batching.default_queue_policy
    policy.max_queue_size = max_size
    policy.default_timeout_microseconds = timeout_us
    policy.timeout_action = pb.ModelQueuePolicy.REJECT
    policy.allow_timeout_override = True


def _io(name: str, dtype: int, dims: list[int], optional: bool = False):
    return dict(name=name, data_type=dtype, dims=dims, optional=optional)


def _outputs(table: tuple[C.Output, ...], per_face: bool) -> list[dict]:
    """Config outputs from the contract's table; face_pipeline's per-face ones have a variable
    face dimension first (the multitask's batch dimension is Triton's own)."""
    return [_io(o.name, _PB_TYPES[o.dtype], [-1, *o.dims] if per_face else list(o.dims)) for o in table]


def _params(cfg: pb.ModelConfig, values: dict[str, object]) -> None:
    for key, value in values.items():
        cfg.parameters[key].string_value = str(value)


def _model(name: str, target: str, max_batch: int, preferred: tuple[int, ...], version: int,
           inputs: list[dict], outputs: list[dict], t: Tuning, provenance: dict,
           int8: bool = False, also_serve: tuple[int, ...] = ()) -> pb.ModelConfig:
    cfg = pb.ModelConfig(name=name, max_batch_size=max_batch)
    cfg.input.extend(pb.ModelInput(**i) for i in inputs)
    cfg.output.extend(pb.ModelOutput(**{k: v for k, v in o.items() if k != "optional"})
                      for o in outputs)
    # serve exactly the production version: a rollback to a lower version must win over "latest"
    cfg.version_policy.specific.versions.append(version)
    # versions kept loaded beside it: the gallery's version until reembed has run (README)
    cfg.version_policy.specific.versions.extend(sorted(set(also_serve) - {version}))
    cfg.dynamic_batching.max_queue_delay_microseconds = t.max_queue_delay_us
    _bound_queue(cfg, t.model_max_queue, t.model_queue_timeout_us)
    if target == "gpu":
        _gpu(cfg, version, inputs, t, int8)
    else:
        # measured on the 2-core CPU host (README): these sizes paid off there
        cfg.dynamic_batching.preferred_batch_size.extend(preferred)
        cfg.backend = "python"
        cfg.instance_group.add(count=t.model_instances, kind=pb.ModelInstanceGroup.KIND_CPU)
        _params(cfg, {"onnx_file": "model.onnx", "intra_op_threads": t.ort_threads})
    _params(cfg, provenance)
    return cfg


_WARMUP_TYPES = {UINT8: "TYPE_UINT8", FP32: "TYPE_FP32"}


def has_qdq(onnx_path) -> bool:
    """True for a statically quantised (QuantizeLinear/DequantizeLinear) graph."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)


def _gpu(cfg: pb.ModelConfig, version: int, inputs: list[dict], t: Tuning, int8: bool) -> None:
    """NGC Triton, onnxruntime backend. Not run here (no GPU): each choice follows Triton's
    documentation, cited in docs/deployment.md."""
    cfg.backend = "onnxruntime"
    cfg.default_model_filename = "model.onnx"
    # no `gpus`: the instances are placed on every GPU the container sees
    cfg.instance_group.add(count=t.gpu_instances, kind=pb.ModelInstanceGroup.KIND_GPU)
    # one zero-filled request per instance before the model reports ready: the TensorRT
    # engine is built (or read from the cache) at load, not in the middle of traffic
    warm = cfg.model_warmup.add(name="zeros", batch_size=1)
    for i in inputs:
        dims = [C.DETECTOR_SIZE if d == -1 else d for d in i["dims"][:2]] + i["dims"][2:]
        warm.inputs[i["name"]].data_type = i["data_type"]
        warm.inputs[i["name"]].dims.extend(dims)
        warm.inputs[i["name"]].zero_data = True
    if not t.tensorrt or any(d == -1 for i in inputs for d in i["dims"]):
        # TensorRT only where the shapes are fixed: an engine's optimisation profile must span
        # every input shape, and the detector's are the detection plan's (480 letterbox, native
        # passes and tiles of any shape up to 640 x 640 px), so it stays on the CUDA EP
        return
    acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    # int8 QDQ graphs need TensorRT's INT8 mode to run as int8; fp32 graphs get FP16
    acc.parameters["precision_mode"] = "INT8" if int8 else "FP16"
    acc.parameters["max_workspace_size_bytes"] = str(1 << 30)
    acc.parameters["trt_engine_cache_enable"] = "1"
    acc.parameters["trt_engine_cache_path"] = t.trt_cache_dir
    acc.parameters["trt_engine_cache_prefix"] = f"{cfg.name}_v{version}"
    acc.parameters["trt_timing_cache_enable"] = "1"
    acc.parameters["trt_timing_cache_path"] = t.trt_cache_dir
    # one explicit optimisation profile from batch 1 to max_batch_size: without it TensorRT
    # rebuilds its engine whenever a larger batch shows up
    shapes = {}
    for key, batch in (("min", 1), ("opt", max(1, cfg.max_batch_size // 2)), ("max", cfg.max_batch_size)):
        shapes[key] = ",".join(
            f"{i['name']}:" + "x".join(str(d) for d in [batch, *warm.inputs[i['name']].dims])
            for i in inputs)
        acc.parameters[f"trt_profile_{key}_shapes"] = shapes[key]


def detector_config(target: str, version: int, provenance: dict, t: Tuning = Tuning(),
                    int8: bool = False, also_serve: tuple[int, ...] = ()) -> pb.ModelConfig:
    return _model(
        C.DETECTOR, target, t.detector_max_batch, t.detector_preferred, version,
        [_io(C.DET_INPUT, UINT8, [-1, -1, 3])],
        [_io("loc", FP32, [-1, 4]), _io("conf", FP32, [-1, 2]), _io("landmarks", FP32, [-1, 10])],
        t, provenance, int8, also_serve)


def multitask_config(target: str, version: int, provenance: dict, t: Tuning = Tuning(),
                     int8: bool = False, also_serve: tuple[int, ...] = ()) -> pb.ModelConfig:
    return _model(
        C.MULTITASK, target, t.multitask_max_batch, t.multitask_preferred, version,
        [_io(C.MT_INPUT, UINT8, [C.CHIP_SIZE, C.CHIP_SIZE, 3])],
        _outputs(C.MULTITASK_OUTPUTS, per_face=False),
        t, provenance, int8, also_serve)


def pipeline_config(t: Tuning = Tuning(), decode: DecodeLimits = DecodeLimits(),
                    multitask_version: int = 0) -> pb.ModelConfig:
    """`decode`: the API's upload limits (UploadSettings.decode_limits()), enforced again by the
    pipeline when it decodes."""
    cfg = pb.ModelConfig(name=C.PIPELINE, backend="python", max_batch_size=t.pipeline_max_batch)
    cfg.input.extend([
        pb.ModelInput(name=C.PL_IMAGE, data_type=BYTES, dims=[1]),
        pb.ModelInput(name=C.PL_MIN_FACE_SIZE, data_type=INT32, dims=[1], optional=True),
        pb.ModelInput(name=C.PL_MAX_FACES, data_type=INT32, dims=[1], optional=True),
        pb.ModelInput(name=C.PL_SINGLE_PASS, data_type=INT32, dims=[1], optional=True),
        pb.ModelInput(name=C.PL_MULTITASK_VERSION, data_type=INT32, dims=[1], optional=True),
    ])
    outputs = _outputs(C.FACE_OUTPUTS, per_face=True) + _outputs(C.PHOTO_OUTPUTS, per_face=False)
    cfg.output.extend(pb.ModelOutput(**{k: v for k, v in o.items() if k != "optional"}) for o in outputs)
    cfg.dynamic_batching.max_queue_delay_microseconds = t.pipeline_queue_delay_us
    _bound_queue(cfg, t.pipeline_max_queue, t.pipeline_queue_timeout_us)
    # several instances: some decode/align while others wait on the detector or multitask
    cfg.instance_group.add(count=t.pipeline_instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    _params(cfg, {
        "detector_model": C.DETECTOR, "multitask_model": C.MULTITASK, "multitask_version": multitask_version,
        "detector_size": t.detector_size, "score_threshold": t.score_threshold,
        "multitask_max_batch": t.multitask_max_batch,
        "min_face_size": t.min_face_size, "tile_size": t.tile_size,
        "detector_request_batch": min(t.detector_request_batch, t.detector_max_batch),
        "detector_requests_in_flight": t.detector_requests_in_flight,
        **decode.params(),
    })
    return cfg


def to_pbtxt(cfg: pb.ModelConfig) -> str:
    return text_format.MessageToString(cfg)


def parse_pbtxt(text: str) -> pb.ModelConfig:
    return text_format.Parse(text, pb.ModelConfig())
