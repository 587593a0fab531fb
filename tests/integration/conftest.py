"""The API wired to the real Triton and a real database: SQLite and MariaDB."""

from __future__ import annotations

import contextlib
import uuid

import httpx
import pytest
import pytest_asyncio

from core.settings import DatabaseSettings, MatchingSettings, MySQLSettings, Settings

MYSQL = MySQLSettings(host="127.0.0.1")  # MYSQL_* from the environment, host defaulting to local


@contextlib.contextmanager
def mysql_database():
    """A database of its own on the real server, dropped afterwards."""
    import pymysql

    name = f"fa_test_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host=MYSQL.host, port=MYSQL.port, user=MYSQL.user, password=MYSQL.password)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def api_settings(base: Settings, tmp_path, backend: str, database: str | None = None, **overrides) -> Settings:
    mysql = MySQLSettings(host=None)
    if backend == "mysql":
        mysql = MySQLSettings(host=MYSQL.host, port=MYSQL.port, user=MYSQL.user,
                              password=MYSQL.password, database=database)
    return base.model_copy(update={
        "mysql": mysql,
        "database": DatabaseSettings(sqlite_path=tmp_path / "api.sqlite3"),
        "matching": MatchingSettings(sync_interval_s=0.2),
        **overrides,
    })


@contextlib.asynccontextmanager
async def running_api(settings: Settings):
    from api.main import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=60) as client:
            client.app = app
            yield client


@pytest.fixture(scope="module")
def client(triton):
    """A gRPC client of the session's Triton (face_pipeline called directly)."""
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(triton.grpc_url)
    yield c
    c.close()


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def backend(request):
    return request.param


@pytest_asyncio.fixture
async def api(triton_settings, tmp_path, backend):
    if backend == "mysql":
        with mysql_database() as name:
            async with running_api(api_settings(triton_settings, tmp_path, backend, name)) as client:
                yield client
    else:
        async with running_api(api_settings(triton_settings, tmp_path, backend)) as client:
            yield client


@contextlib.contextmanager
def served_api(settings: Settings):
    """The app under a real uvicorn on a free port (in a thread): yields its base URL."""
    import threading
    import time

    import uvicorn

    from api.main import create_app
    from tools.triton_local import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


async def model_statistics(client, models) -> dict:
    """{model: {"inferences", "executions"}} from Triton's statistics through an aio gRPC client
    (the python backend reports a request just after answering it, an error answer included)."""
    out = {}
    for model in models:
        s = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
        out[model] = {"inferences": int(s.get("inference_count", 0)), "executions": int(s.get("execution_count", 0))}
    return out
