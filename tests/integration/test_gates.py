"""What refuses a request before any work: API keys checked before the body is read, rate
limits for callers without a key, cost-aware buckets, admission control; and the SQLite
transaction that must roll back when COMMIT fails. Real app, real SQLite; no Triton needed
(nothing here gets past the gates to inference)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from api.auth import key_hash
from api.errors import DatabaseUnavailable
from api.repository import Repository
from core.settings import AdmissionSettings, AuthSettings, DatabaseSettings
from tests.conftest import make_settings
from tests.integration.conftest import running_api


def settings(tmp_path, **update):
    base = make_settings(tmp_path / "var", tmp_path / "repo")
    return base.model_copy(update={"database": DatabaseSettings(sqlite_path=tmp_path / "db.sqlite3"), **update})


async def call(app, method: str, path: str, headers=(), body_chunks=(b"",), hang: bool = False):
    """Drive the ASGI app directly; report the response and whether the body was ever read."""
    chunks = list(body_chunks)
    reads = 0

    async def receive():
        nonlocal reads
        reads += 1
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": hang or bool(chunks)}
        await asyncio.sleep(3600)  # a client that never finishes sending

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "server": ("api", 80), "client": ("10.0.0.7", 5555),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
    await asyncio.wait_for(app(scope, receive, send), 5)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), reads


async def test_a_request_without_a_valid_key_is_refused_before_its_body_is_read(tmp_path):
    auth = AuthSettings(enabled=True, key_hashes=key_hash("s3cret"))
    async with running_api(settings(tmp_path, auth=auth)) as api:
        app = api.app
        multipart = [("Content-Type", "multipart/form-data; boundary=x"), ("Content-Length", "9000000")]
        status, _, reads = await call(app, "POST", "/analyze", multipart, [b"--x\r\n" + bytes(60000)] * 150)
        assert (status, reads) == (401, 0)
        status, _, reads = await call(app, "POST", "/analyze", multipart + [("X-API-Key", "wrong")])
        assert (status, reads) == (401, 0)
        # with the key the body is read (and, being junk, refused by the form parser)
        status, _, reads = await call(app, "POST", "/analyze", multipart + [("X-API-Key", "s3cret")],
                                      [b"--x--\r\n"])
        assert status == 422 and reads >= 1


async def test_callers_without_a_key_are_rate_limited_per_address(tmp_path):
    auth = AuthSettings(enabled=True, key_hashes=key_hash("s3cret"), anonymous_rate_limit_per_minute=20)
    async with running_api(settings(tmp_path, auth=auth)) as api:
        codes = [(await api.get("/metrics")).status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and codes[-1] == 429  # burst of 20 // 4 = 5
        # failed key attempts drain the same bucket: no free guessing
        assert (await api.get("/stats")).status_code == 429
        # an authenticated caller has its own bucket
        assert (await api.get("/stats", headers={"X-API-Key": "s3cret"})).status_code == 200


async def test_image_requests_cost_more_of_the_key_bucket(tmp_path):
    auth = AuthSettings(enabled=True, key_hashes=key_hash("k"), rate_limit_per_minute=60,
                        rate_limit_burst=12, image_request_cost=5)
    async with running_api(settings(tmp_path, auth=auth)) as api:
        key = {"X-API-Key": "k"}
        # no file: the gate charges 5 tokens, then the route refuses the empty request (4xx)
        codes = [(await api.post("/analyze", headers=key)).status_code for _ in range(3)]
        assert codes[2] == 429 and all(400 <= c < 500 and c != 429 for c in codes[:2]), codes
        # 2 tokens left: reads still go through, a third image request does not
        assert (await api.get("/stats", headers=key)).status_code == 200
        r = await api.post("/register", headers=key)
        assert r.status_code == 429 and "image requests cost 5" in r.json()["message"]


async def test_admission_control_answers_503_with_retry_after_beyond_its_bounds(tmp_path):
    admission = AdmissionSettings(max_inflight=1, max_waiting=1, max_wait_s=0.5, retry_after_s=2)
    async with running_api(settings(tmp_path, admission=admission)) as api:
        app = api.app
        multipart = [("Content-Type", "multipart/form-data; boundary=x")]
        # two uploads that never finish sending hold the one slot and the one waiting place
        hold = [asyncio.create_task(call(app, "POST", "/analyze", multipart, [b"--x\r\n"], hang=True))
                for _ in range(2)]
        await asyncio.sleep(0.2)
        status, headers, reads = await call(app, "POST", "/analyze", multipart)
        assert (status, headers.get(b"retry-after"), reads) == (503, b"2", 0), headers
        assert (await api.get("/stats")).status_code == 200  # reads are not image work
        done, _ = await asyncio.wait(hold, timeout=2)
        assert len(done) == 1 and done.pop().exception() is None  # the waiter gave up after 0.5 s: 503
        for task in hold:
            task.cancel()


async def test_sqlite_rolls_back_when_commit_fails(tmp_path):
    repo = Repository(settings(tmp_path))
    await repo.start()
    try:
        async with repo.transaction() as tx:
            await tx.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            await tx.execute("CREATE TABLE child (parent_id INTEGER REFERENCES parent(id)"
                             " DEFERRABLE INITIALLY DEFERRED)")
        # a deferred foreign key is only checked at COMMIT: the commit itself fails
        with pytest.raises(sqlite3.IntegrityError):
            async with repo.transaction(locked=True) as tx:
                await tx.execute("INSERT INTO child VALUES (42)")
        # the failed transaction was rolled back: the connection works, nothing was written
        async with repo.transaction(locked=True) as tx:
            assert (await tx.fetchone("SELECT COUNT(*) FROM child"))[0] == 0
    finally:
        await repo.close()


async def test_sqlite_lock_wait_is_bounded(tmp_path):
    repo = Repository(settings(tmp_path, database=DatabaseSettings(sqlite_path=tmp_path / "db.sqlite3",
                                                                   lock_wait_s=0.5)))
    other = Repository(settings(tmp_path, database=DatabaseSettings(sqlite_path=tmp_path / "db.sqlite3",
                                                                    lock_wait_s=0.5)))
    await repo.start()
    await other.start()
    try:
        async with repo.transaction(locked=True):
            loop = asyncio.get_running_loop()
            t = loop.time()
            with pytest.raises(DatabaseUnavailable):
                async with other.transaction(locked=True):
                    pass
            assert loop.time() - t < 3
    finally:
        await repo.close()
        await other.close()
