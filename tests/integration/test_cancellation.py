"""Abandoned work is cancelled, on the real tritonserver and through the API.

A heavy request: a 25 MP photo asked for faces down to 12 px, so face_pipeline sends about a
hundred detector windows (enough that the windows in flight when a 1 s deadline passes stay
well under half of them, whatever the machine's speed; at 13 MP, 56 windows, a quiet machine
had run 29-33 by then). Its full cost is counted once (face_detector's inference count), then
the same request is abandoned three ways once the detector has started on it: the gRPC call
cancelled, the API's own Triton deadline passing, and the API's client disconnecting. Each
time face_pipeline must stop sending windows (request.is_cancelled() between detector calls),
which Triton's statistics show: far fewer detector inferences than the full run.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio

from pipeline import contract as C
from tests.costly_inputs import many_windows_photo
from tests.integration.conftest import api_settings, model_statistics, running_api, served_api

pytestmark = pytest.mark.triton
MODELS = (C.PIPELINE, C.DETECTOR)

MIN_FACE = 12
GROUP = "detection/images/friends_t1.jpg"


@pytest.fixture(scope="module")
def heavy(shared_data) -> bytes:
    return many_windows_photo(shared_data / GROUP, width=7000)


def inputs(data: bytes):
    image = grpcaio.InferInput(C.PL_IMAGE, [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    small = grpcaio.InferInput(C.PL_MIN_FACE_SIZE, [1, 1], "INT32")
    small.set_data_from_numpy(np.array([[MIN_FACE]], np.int32))
    return [image, small]


class Counter:
    """face_detector's inferences and face_pipeline's finished requests since it was made."""

    def __init__(self, url: str):
        self.client = grpcaio.InferenceServerClient(url)

    async def __aenter__(self):
        self.start = await model_statistics(self.client, MODELS)
        return self

    async def __aexit__(self, *exc):
        await self.client.close()

    async def delta(self) -> dict:
        now = await model_statistics(self.client, MODELS)
        return {m: {k: now[m][k] - self.start[m][k] for k in now[m]} for m in now}

    async def detector_started(self):
        while (await self.delta())[C.DETECTOR]["inferences"] == 0:
            await asyncio.sleep(0.05)

    async def pipeline_finished(self) -> dict:
        """Waits until face_pipeline has answered the one request (the python backend reports a
        request's statistics once it has answered it, an error answer included)."""
        while True:
            d = await self.delta()
            if d[C.PIPELINE]["inferences"] >= 1:
                return d
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def full_cost(triton, heavy) -> int:
    """Detector windows of the heavy request when nobody gives up on it."""
    async def run():
        async with Counter(triton.grpc_url) as counter:
            await counter.client.infer(C.PIPELINE, inputs(heavy), client_timeout=300)
            d = await counter.delta()
        assert d[C.PIPELINE]["inferences"] == 1
        return d[C.DETECTOR]["inferences"]

    n = asyncio.run(run())
    assert n >= 80, f"only {n} detector windows: the request is not heavy enough to see a cancellation"
    return n


def stopped_early(d: dict, full: int, how: str) -> None:
    windows = d[C.DETECTOR]["inferences"]
    print(f"\n{how}: {windows} of {full} detector windows run, pipeline {d[C.PIPELINE]}")
    assert d[C.PIPELINE]["inferences"] == 1
    # at most det_inflight (4) detector calls of 4 windows were out when the cancellation was seen
    assert windows < full / 2


async def test_a_cancelled_grpc_call_stops_the_pipeline(triton, heavy, full_cost):
    async with Counter(triton.grpc_url) as counter:
        call = asyncio.create_task(counter.client.infer(C.PIPELINE, inputs(heavy), client_timeout=300))
        await counter.detector_started()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        stopped_early(await counter.pipeline_finished(), full_cost, "gRPC call cancelled")


async def test_the_api_deadline_cancels_the_triton_request(triton_settings, tmp_path, heavy, full_cost):
    triton = triton_settings.triton.model_copy(update={"timeout_s": 1.0})
    settings = api_settings(triton_settings, tmp_path, "sqlite", triton=triton)
    async with running_api(settings) as api, Counter(triton.grpc_url) as counter:
        r = await api.post("/analyze", params={"min_face_size": MIN_FACE}, files={"file": ("x.jpg", heavy)})
        assert r.status_code == 503 and r.json()["error"] == "inference_unavailable"
        stopped_early(await counter.pipeline_finished(), full_cost, "API deadline (1 s)")
        stats = (await api.get("/stats")).json()
        assert stats["total_detections"] == 0


async def test_a_client_that_disconnects_cancels_the_triton_request(triton_settings, tmp_path, heavy, full_cost):
    settings = api_settings(triton_settings, tmp_path, "sqlite")
    with served_api(settings) as url:
        async with Counter(triton_settings.triton.grpc_url) as counter:
            async with httpx.AsyncClient(base_url=url) as client:
                post = asyncio.create_task(client.post("/analyze", params={"min_face_size": MIN_FACE},
                                                       files={"file": ("x.jpg", heavy)}, timeout=300))
                await counter.detector_started()
                post.cancel()  # the client goes away: httpx closes the connection
                with pytest.raises(asyncio.CancelledError):
                    await post
            stopped_early(await counter.pipeline_finished(), full_cost, "client disconnected")
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/stats")).json()["total_detections"] == 0
