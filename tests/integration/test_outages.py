"""Outages of Triton and of the database: 503 quickly, /health names the part, and the
service recovers by itself when the part comes back, without losing or half-writing data."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.settings import MySQLSettings, TritonSettings
from tests.integration.conftest import MYSQL, api_settings, mysql_database, running_api
from tools.triton_local import TritonServer, free_port

pytestmark = pytest.mark.triton

FACE = "verification/images/Joe_Biden/biden.jpg"


async def post_photo(api, data: bytes):
    return await api.post("/analyze", files={"file": ("p.jpg", data, "image/jpeg")})


async def wait_for(api, data: bytes, seconds: float = 90) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        r = await post_photo(api, data)
        if r.status_code == 200:
            return time.monotonic() - start
        assert r.status_code == 503, r.text
        await asyncio.sleep(0.5)
    raise AssertionError("did not recover")


async def test_triton_crash_gives_503_then_recovers_without_api_restart(model_stack, triton_settings,
                                                                       tmp_path, shared_data):
    _, _, repo = model_stack
    server = TritonServer(repository=repo, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), work_dir=tmp_path / "triton")
    server.start(180)
    triton = TritonSettings(grpc_url=server.grpc_url, http_url=server.http_url,
                            metrics_url=server.metrics_url, timeout_s=5)
    data = (shared_data / FACE).read_bytes()
    try:
        async with running_api(api_settings(triton_settings, tmp_path, "sqlite", triton=triton)) as api:
            assert (await post_photo(api, data)).status_code == 200
            server.kill()
            t = time.monotonic()
            r = await post_photo(api, data)
            assert r.status_code == 503 and r.json()["error"] == "inference_unavailable"
            assert time.monotonic() - t < triton.timeout_s + 2, "no hang past the deadline"
            health = await api.get("/health")
            assert health.status_code == 503
            assert health.json()["services"]["face_detector"] is False
            assert health.json()["services"]["database"] is True

            server.start(180)  # same ports
            await wait_for(api, data)
            assert (await api.get("/health")).json()["status"] == "healthy"
            stats = (await api.get("/stats")).json()
            assert stats["total_detections"] == 2 and stats["unknown_faces"] == 1
    finally:
        server.stop()


class Proxy:
    """A TCP proxy to MariaDB that can be cut: the database 'goes away' for the API."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self.server, self.writers = None, set()

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self):
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()


@pytest.mark.mysql
async def test_database_outage_gives_503_then_recovers_with_nothing_half_written(triton_settings, tmp_path,
                                                                                 shared_data):
    data = (shared_data / FACE).read_bytes()
    proxy = Proxy(MYSQL.port)
    await proxy.start()
    with mysql_database() as name:
        mysql = MySQLSettings(host="127.0.0.1", port=proxy.port, user=MYSQL.user, password=MYSQL.password,
                              database=name, connect_timeout_s=2)
        settings = api_settings(triton_settings, tmp_path, "mysql", name).model_copy(update={"mysql": mysql})
        async with running_api(settings) as api:
            assert (await post_photo(api, data)).status_code == 200
            await proxy.stop()
            t = time.monotonic()
            r = await post_photo(api, data)
            assert r.status_code == 503 and r.json()["error"] == "database_unavailable", r.text
            assert time.monotonic() - t < 15
            health = await api.get("/health")
            assert health.status_code == 503 and health.json()["services"]["database"] is False
            assert health.json()["services"]["face_detector"] is True

            await proxy.start()
            await wait_for(api, data, 60)
            stats = (await api.get("/stats")).json()
            # exactly the two successful requests left rows; the failed one left none
            assert stats["total_detections"] == 2
            assert stats["top_unknown_faces"][0]["detection_count"] == 2
    await proxy.stop()


async def test_api_keys_and_rate_limit(triton_settings, tmp_path, shared_data):
    from api.auth import key_hash
    from core.settings import AuthSettings

    auth = AuthSettings(enabled=True, key_hashes=key_hash("s3cret"), rate_limit_per_minute=3)
    async with running_api(api_settings(triton_settings, tmp_path, "sqlite", auth=auth)) as api:
        assert (await api.get("/stats")).status_code == 401
        assert (await api.get("/stats", headers={"X-API-Key": "wrong"})).status_code == 401
        assert (await api.get("/health")).status_code == 200  # open by default
        assert (await api.get("/metrics")).status_code == 200
        codes = [(await api.get("/stats", headers={"X-API-Key": "s3cret"})).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        # a key created by the operator tool is stored hashed and works too
        from api.maintenance import add_key

        key = await add_key(api.app.state.services.settings, "ops")
        assert (await api.get("/stats", headers={"X-API-Key": key})).status_code == 200
