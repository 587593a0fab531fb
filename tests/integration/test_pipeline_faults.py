"""face_pipeline under faults, on a second real tritonserver from a test-only model repository.

The repository is what `export publish` writes, with two changes made the way an operator
would make them: the decode caps come from FA_UPLOAD_* settings set for this test (so Triton
must refuse what these settings refuse), and face_detector is the real onnx_runner wrapped by
tests/fault_injection/faulty_runner.py, which fails a whole detector execution when one of
its windows is painted with a marker colour. One pipeline instance with a long batching delay
makes concurrent requests share one execution, which Triton's statistics confirm.
"""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
from PIL import Image
from tritonclient.utils import InferenceServerException

from core.settings import UploadSettings
from pipeline import contract as C
from tests.integration.conftest import model_statistics

pytestmark = pytest.mark.triton
MODELS = (C.PIPELINE, C.DETECTOR)

FAULTY_RUNNER = Path(__file__).parents[1] / "fault_injection" / "faulty_runner.py"
MARK = (7, 201, 7)  # faulty_runner.MARK
FACES = ["verification/images/Joe_Biden/biden.jpg", "detection/images/grace_hopper.jpg",
         "verification/images/Tom_Hanks/tom_hanks.png"]
TEST_LIMITS = {"FA_UPLOAD_MAX_JPEG_SCANS": "4", "FA_UPLOAD_MAX_PIXELS": "3000000"}


def photos(shared_data) -> list[bytes]:
    return [(shared_data / f).read_bytes() for f in FACES]


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def faulty_triton(model_stack, tmp_path_factory):
    from export import triton_config as tc
    from export.publish import write_repository
    from tools.triton_local import serving

    _, registry, _ = model_stack
    root = tmp_path_factory.mktemp("faulty")
    repo = root / "repo"
    tuning = tc.Tuning(pipeline_instances=1, pipeline_queue_delay_us=2_000_000, model_instances=1)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in TEST_LIMITS.items():
            mp.setenv(key, value)
        published = write_repository(registry, repo, tuning=tuning, progress=lambda m: None)
    det = next(p for p in published if p.name == C.DETECTOR)
    version_dir = repo / C.DETECTOR / str(det.version)
    shutil.copy2(version_dir / "model.py", version_dir / "onnx_runner.py")
    shutil.copy2(FAULTY_RUNNER, version_dir / "model.py")
    with serving(repo, root / "triton", timeout_s=180, log_file=root / "triton.log") as server:
        yield server


async def infer(client, data: bytes):
    t = grpcaio.InferInput(C.PL_IMAGE, [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    try:
        res = await client.infer(C.PIPELINE, [t], client_timeout=120)
    except InferenceServerException as exc:
        return exc.message()
    return res.as_numpy(C.PL_EMBEDDINGS)[0]


async def shared_execution(url: str, datas: list[bytes]):
    """The answers to `datas` sent at once, and what face_pipeline and face_detector executed
    for them (Triton's statistics; the python backend reports them just after answering, and
    it counts an error answer as a success, so executions are what tell a retry)."""
    client = grpcaio.InferenceServerClient(url)
    try:
        before = await model_statistics(client, MODELS)
        answers = await asyncio.gather(*(infer(client, d) for d in datas))
        delta, last = None, None
        while delta is None or delta != last or delta[C.PIPELINE]["inferences"] < len(datas):
            last, after = delta, await model_statistics(client, MODELS)
            delta = {m: {k: after[m][k] - before[m][k] for k in after[m]} for m in after}
            await asyncio.sleep(0.2)
    finally:
        await client.close()
    return answers, delta


async def test_a_failed_batched_sub_call_fails_only_its_own_request(faulty_triton, triton, shared_data):
    good = photos(shared_data)
    marked = png(Image.new("RGB", (320, 320), MARK))
    answers, delta = await shared_execution(faulty_triton.grpc_url, [good[0], marked, good[1], good[2]])
    print(f"\nshared execution: {delta}; answers: {[a if isinstance(a, str) else a.shape for a in answers]}")
    # the four requests were one face_pipeline execution; its one detector call of 4 windows
    # failed, and each photo was retried alone: 1 + 4 detector executions, 4 + 4 windows
    assert delta[C.PIPELINE] == {"executions": 1, "inferences": 4}
    assert delta[C.DETECTOR] == {"executions": 5, "inferences": 8}
    assert isinstance(answers[1], str) and "injected fault" in answers[1]
    # the batch-mates got their faces, the same as the regular Triton gives for each alone
    reference, _ = await shared_execution(triton.grpc_url, good)
    for got, want in zip([answers[0], answers[2], answers[3]], reference):
        assert isinstance(got, np.ndarray) and len(got) == len(want) >= 1
        assert np.allclose(got, want, atol=2e-3)


async def test_a_corrupt_image_fails_only_its_own_request(faulty_triton, shared_data):
    good = photos(shared_data)
    broken = good[0][:600] + b"\x00" * 4000  # a valid JPEG header, then nothing decodable
    answers, delta = await shared_execution(faulty_triton.grpc_url, [good[1], broken, good[2], good[0]])
    print(f"\nshared execution: {delta}; answers: {[a if isinstance(a, str) else a.shape for a in answers]}")
    assert delta[C.PIPELINE] == {"executions": 1, "inferences": 4}
    assert delta[C.DETECTOR] == {"executions": 1, "inferences": 3}  # the three that decoded, at once
    assert isinstance(answers[1], str) and C.INVALID_IMAGE_PREFIX.strip() in answers[1]
    assert all(isinstance(a, np.ndarray) and len(a) >= 1 for i, a in enumerate(answers) if i != 1)


async def test_decode_caps_come_from_the_api_settings(faulty_triton, triton):
    """Written at publish from FA_UPLOAD_* (here MAX_JPEG_SCANS 4, MAX_PIXELS 3 MP): the faulty
    repository's Triton refuses what the default settings' Triton decodes."""
    from pipeline.decode import check_header

    client = grpcaio.InferenceServerClient(faulty_triton.grpc_url)
    try:
        params = (await client.get_model_config(C.PIPELINE, as_json=True))["config"]["parameters"]
    finally:
        await client.close()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in TEST_LIMITS.items():
            mp.setenv(key, value)
        want = UploadSettings().decode_limits().params()
    assert {k: params[k]["string_value"] for k in want} == want

    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 255, (400, 600, 3), np.uint8))
    buf = io.BytesIO()
    base.save(buf, "JPEG", progressive=True, quality=85)  # libjpeg's progressive script: 10 scans
    progressive = buf.getvalue()
    large = png(Image.new("RGB", (2000, 2000), (90, 120, 150)))  # 4 MP
    check_header(progressive)  # both are fine under the default caps
    check_header(large)
    for data, why in ((progressive, "scans"), (large, "pixels")):
        strict = (await shared_execution(faulty_triton.grpc_url, [data]))[0][0]
        default = (await shared_execution(triton.grpc_url, [data]))[0][0]
        assert isinstance(strict, str) and C.INVALID_IMAGE_PREFIX.strip() in strict and why in strict, strict
        assert isinstance(default, np.ndarray), default
