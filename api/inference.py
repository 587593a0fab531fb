"""The only module of the API that talks to Triton (gRPC, asyncio)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from api import metrics
from api.errors import InferenceUnavailable, InvalidImage
from api.settings import TritonSettings
from pipeline import contract as C

OUTPUTS = (C.PL_BOXES, C.PL_SCORES, C.PL_EMBEDDINGS, C.PL_AGE, C.PL_GENDER, C.PL_CHIPS,
           C.PL_IMAGE_SIZE)


@dataclass
class Face:
    box: np.ndarray  # x1, y1, x2, y2 in original pixels
    score: float
    embedding: np.ndarray  # L2-normalised float32
    age: float
    p_male: float
    chip: np.ndarray  # aligned RGB canvas, uint8


@dataclass
class Analysis:
    faces: list[Face]
    width: int
    height: int


class InferenceClient:
    def __init__(self, settings: TritonSettings):
        self.settings = settings
        self.client = grpcaio.InferenceServerClient(settings.grpc_url)
        self.outputs = [grpcaio.InferRequestedOutput(n) for n in OUTPUTS]

    async def close(self) -> None:
        await self.client.close()

    async def analyze(self, data: bytes, min_face_size: int = 0, max_faces: int = 0) -> Analysis:
        image = grpcaio.InferInput(C.PL_IMAGE, [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        inputs = [image]
        for name, value in ((C.PL_MIN_FACE_SIZE, min_face_size), (C.PL_MAX_FACES, max_faces)):
            if value:
                t = grpcaio.InferInput(name, [1, 1], "INT32")
                t.set_data_from_numpy(np.array([[value]], np.int32))
                inputs.append(t)
        started = time.perf_counter()
        try:
            result = await self.client.infer(self.settings.pipeline_model, inputs, outputs=self.outputs,
                                             client_timeout=self.settings.timeout_s)
        except InferenceServerException as exc:
            message = exc.message() or ""
            if C.INVALID_IMAGE_PREFIX in message:
                raise InvalidImage(message[message.index(C.INVALID_IMAGE_PREFIX):]) from None
            raise InferenceUnavailable("the inference server is unavailable; retry shortly") from None
        finally:
            metrics.TRITON_LATENCY.observe(time.perf_counter() - started)
        out = {n: result.as_numpy(n)[0] for n in OUTPUTS}
        faces = [
            Face(box=out[C.PL_BOXES][i], score=float(out[C.PL_SCORES][i]),
                 embedding=np.ascontiguousarray(out[C.PL_EMBEDDINGS][i], np.float32),
                 age=float(out[C.PL_AGE][i]), p_male=float(out[C.PL_GENDER][i][1]),
                 chip=out[C.PL_CHIPS][i])
            for i in range(len(out[C.PL_BOXES]))
        ]
        w, h = (int(v) for v in out[C.PL_IMAGE_SIZE])
        return Analysis(faces, w, h)

    async def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of stored face canvases by the served face_multitask (for re-embedding)."""
        t = grpcaio.InferInput(C.MT_INPUT, list(chips.shape), "UINT8")
        t.set_data_from_numpy(np.ascontiguousarray(chips, np.uint8))
        try:
            result = await self.client.infer(self.settings.multitask_model, [t],
                                             outputs=[grpcaio.InferRequestedOutput(C.MT_EMBEDDING)],
                                             client_timeout=self.settings.timeout_s)
        except InferenceServerException:
            raise InferenceUnavailable("the inference server is unavailable; retry shortly") from None
        return result.as_numpy(C.MT_EMBEDDING)

    async def model_status(self) -> dict[str, dict]:
        """Readiness and served version (with its MLflow provenance) of each model."""
        status = {}
        for name in (self.settings.detector_model, self.settings.multitask_model,
                     self.settings.pipeline_model):
            entry = {"ready": False, "version": None, "mlflow_version": None}
            try:
                entry["ready"] = await self.client.is_model_ready(name, client_timeout=2)
                if entry["ready"]:
                    cfg = (await self.client.get_model_config(name, as_json=True, client_timeout=2))["config"]
                    versions = cfg.get("version_policy", {}).get("specific", {}).get("versions")
                    entry["version"] = str(versions[0]) if versions else "1"
                    params = cfg.get("parameters", {})
                    entry["mlflow_version"] = params.get("mlflow_version", {}).get("string_value")
            except Exception:  # noqa: BLE001 - any failure means "not ready", reported as such
                entry["ready"] = False
            status[name] = entry
        return status
