"""The only module of the API that talks to Triton (gRPC, asyncio)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from api import metrics
from api.disconnect import unless_client_gone
from api.errors import InferenceUnavailable, InvalidImage, ModelVersionUnavailable
from api.triton_targets import is_multi, replica_addresses
from core.settings import TritonSettings
from pipeline import contract as C
from pipeline.result import Analysis, Face, analysis_of, faces_to_ask

__all__ = ["Analysis", "Face", "InferenceClient"]  # Face and Analysis: the result type of both backends

OUTPUTS = [o.name for o in C.PIPELINE_OUTPUTS]


def _channel_args(settings: TritonSettings) -> list[tuple[str, object]] | None:
    """tritonclient's own channel options, plus the load-balancing policy when one is set
    (passing channel_args replaces tritonclient's defaults, so they are repeated here)."""
    if not settings.grpc_lb_policy:
        return None
    keepalive = grpcaio.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpcaio.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcaio.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.lb_policy_name", settings.grpc_lb_policy),
    ]


class InferenceClient:
    def __init__(self, settings: TritonSettings):
        self.settings = settings
        self._client = self._connect()
        self._born = time.monotonic()
        self._retiring: set[asyncio.Task] = set()
        self.outputs = [grpcaio.InferRequestedOutput(n) for n in OUTPUTS]

    def _connect(self, url: str | None = None) -> grpcaio.InferenceServerClient:
        return grpcaio.InferenceServerClient(url or self.settings.grpc_url,
                                             channel_args=_channel_args(self.settings))

    @property
    def client(self) -> grpcaio.InferenceServerClient:
        """The channel, renewed every channel_refresh_s: a new channel resolves DNS again, so
        Triton pods added since get their share; the old one closes after its calls end."""
        refresh = self.settings.channel_refresh_s
        if refresh and time.monotonic() - self._born > refresh:
            old, self._client, self._born = self._client, self._connect(), time.monotonic()
            task = asyncio.get_running_loop().create_task(self._close_later(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return self._client

    async def _close_later(self, old: grpcaio.InferenceServerClient) -> None:
        await asyncio.sleep(self.settings.timeout_s + 1)
        await old.close()

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await self._client.close()

    async def analyze(self, data: bytes, min_face_size: int = 0, max_faces: int = 0,
                      multitask_version: str | None = None, small_faces: bool = True) -> Analysis:
        """`multitask_version`: embed with this face_multitask version (the gallery's); None:
        the pipeline's default. ModelVersionUnavailable when that version is not served.
        `small_faces` False: the one letterbox pass (contract.PL_SINGLE_PASS)."""
        image = grpcaio.InferInput(C.PL_IMAGE, [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        inputs = [image]
        version = int(multitask_version) if multitask_version and multitask_version.isdigit() else 0
        for name, value in ((C.PL_MIN_FACE_SIZE, min_face_size), (C.PL_MAX_FACES, faces_to_ask(max_faces)),
                            (C.PL_MULTITASK_VERSION, version), (C.PL_SINGLE_PASS, int(not small_faces))):
            if value:
                t = grpcaio.InferInput(name, [1, 1], "INT32")
                t.set_data_from_numpy(np.array([[value]], np.int32))
                inputs.append(t)
        started = time.perf_counter()
        try:
            # `timeout` (microseconds) is the server-side queue deadline: Triton drops a request
            # still queued when the API has given up on it instead of working on it anyway
            # and when the API gives up (client_timeout, or its client disconnected: the call is
            # cancelled) Triton sees the gRPC call cancelled and face_pipeline stops working on it
            result = await unless_client_gone(self.client.infer(
                self.settings.pipeline_model, inputs, outputs=self.outputs,
                client_timeout=self.settings.timeout_s, timeout=int(self.settings.timeout_s * 1e6)))
        except InferenceServerException as exc:
            message = exc.message() or ""
            if C.INVALID_IMAGE_PREFIX in message:
                raise InvalidImage(message[message.index(C.INVALID_IMAGE_PREFIX):]) from None
            if C.VERSION_UNAVAILABLE_PREFIX in message:
                raise ModelVersionUnavailable(
                    f"face_multitask v{version}, the version the gallery's embeddings are in, is not served; "
                    "faces are matched again once the reembed job has re-embedded the gallery with the "
                    "served version (mode=detect works meanwhile)") from None
            raise InferenceUnavailable("the inference server is unavailable; retry shortly") from None
        finally:
            metrics.TRITON_LATENCY.observe(time.perf_counter() - started)
        return analysis_of({n: result.as_numpy(n)[0] for n in OUTPUTS}, max_faces)

    async def embed_chips(self, chips: np.ndarray, version: str) -> np.ndarray:
        """Embeddings of stored face canvases by face_multitask `version` (named in the call:
        while two versions are loaded, Triton's own choice would be the highest)."""
        t = grpcaio.InferInput(C.MT_INPUT, list(chips.shape), "UINT8")
        t.set_data_from_numpy(np.ascontiguousarray(chips, np.uint8))
        try:
            result = await self.client.infer(self.settings.multitask_model, [t], model_version=version,
                                             outputs=[grpcaio.InferRequestedOutput(C.MT_EMBEDDING)],
                                             client_timeout=self.settings.timeout_s)
        except InferenceServerException:
            raise InferenceUnavailable("the inference server is unavailable; retry shortly") from None
        return result.as_numpy(C.MT_EMBEDDING)

    async def replica_status(self) -> dict[str, dict[str, dict]]:
        """model_status of every replica grpc_url names (empty for a single Triton): one
        replica may still serve the previous version while a publish goes round."""
        if not is_multi(self.settings.grpc_url):
            return {}
        try:
            addresses = await asyncio.to_thread(replica_addresses, self.settings.grpc_url)
        except OSError:
            return {}
        out = {}
        for address in addresses:
            client = grpcaio.InferenceServerClient(address)
            try:
                out[address] = await self.model_status(client)
            finally:
                await client.close()
        return out

    async def model_status(self, client: grpcaio.InferenceServerClient | None = None) -> dict[str, dict]:
        """Readiness and served version (with its MLflow provenance) of each model, asked
        of all three at once so a hung Triton costs one 2 s deadline, not six."""
        client = client or self.client
        names = (self.settings.detector_model, self.settings.multitask_model, self.settings.pipeline_model)
        entries = await asyncio.gather(*(self._model_status(client, n) for n in names))
        return dict(zip(names, entries))

    async def version_ready(self, version: str) -> bool:
        """Whether Triton serves this face_multitask version (for /health)."""
        try:
            return await self.client.is_model_ready(self.settings.multitask_model, version, client_timeout=2)
        except Exception:  # noqa: BLE001 - unreachable counts as not served
            return False

    async def default_multitask_version(self) -> str | None:
        """The face_multitask version face_pipeline embeds with when asked for none (@production)."""
        try:
            cfg = (await self.client.get_model_config(self.settings.pipeline_model, as_json=True,
                                                      client_timeout=5))["config"]
        except InferenceServerException:
            raise InferenceUnavailable("the inference server is unavailable; retry shortly") from None
        value = cfg.get("parameters", {}).get("multitask_version", {}).get("string_value", "")
        return value if value.isdigit() and int(value) > 0 else None

    async def _model_status(self, client: grpcaio.InferenceServerClient, name: str) -> dict:
        entry = {"ready": False, "version": None, "mlflow_version": None}
        try:
            async with asyncio.timeout(2.5):
                entry["ready"] = await client.is_model_ready(name, client_timeout=2)
                if entry["ready"]:
                    cfg = (await client.get_model_config(name, as_json=True, client_timeout=2))["config"]
                    versions = cfg.get("version_policy", {}).get("specific", {}).get("versions")
                    entry["version"] = str(versions[0]) if versions else "1"
                    params = cfg.get("parameters", {})
                    entry["mlflow_version"] = params.get("mlflow_version", {}).get("string_value")
        except Exception:  # noqa: BLE001 - any failure means "not ready", reported as such
            entry["ready"] = False
        return entry
