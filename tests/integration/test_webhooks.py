"""Webhooks through the real stack: identity events from real photos (real Triton), the outbox on
SQLite and MariaDB, delivered by the API's background task over HTTP to a real local receiver:
signatures, retries after 500s and while the receiver is down, no loss across an API restart."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from core.settings import WebhookSettings
from face_analytics_client import verify_signature
from tools.triton_local import free_port
from tests.integration.conftest import api_settings, mysql_database, running_api

pytestmark = pytest.mark.triton

BIDEN = "verification/images/Joe_Biden/biden.jpg"
GIRL = "verification/images/damefaces_girl1/dame_girl1.jpg"
WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"
# the receivers here listen on 127.0.0.1: a private address, allowed explicitly
FAST = WebhookSettings(backoff_base_s=0.2, backoff_max_s=1.0, poll_interval_s=0.2, lease_s=5, timeout_s=5,
                       max_attempts=1000, unknown_seen_every=2, allow_private=True)


class Receiver:
    """A real HTTP server in a thread: records every POST; answers 500 to the first `fail` of them."""

    def __init__(self, port: int | None = None, fail: int = 0):
        self.port, self.fail = port or free_port(), fail
        self.requests: list[tuple[dict, bytes, int]] = []  # headers, body, status answered
        self.server = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status = 500 if receiver.fail > 0 else 204
                    receiver.fail -= 1
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> dict[str, dict]:
        """Events answered 2xx, by event id."""
        with self.lock:
            return {json.loads(b)["id"]: json.loads(b) for _, b, status in self.requests if status < 300}

    async def wait_for(self, n: int, deadline_s: float = 120) -> dict[str, dict]:
        end = time.monotonic() + deadline_s
        while len(self.delivered()) < n and time.monotonic() < end:
            await asyncio.sleep(0.1)
        return self.delivered()


def photo(shared_data, rel: str):
    return {"file": ("p.jpg", (shared_data / rel).read_bytes(), "image/jpeg")}


def settings_for(triton_settings, tmp_path, backend, database=None):
    return api_settings(triton_settings, tmp_path, backend, database, webhooks=FAST)


@pytest.fixture
def database(backend):
    if backend == "mysql":
        with mysql_database() as name:
            yield name
    else:
        yield None


async def subscribe(api, url: str, events=("*",)) -> dict:
    r = await api.post("/webhooks", json={"url": url, "events": list(events), "description": "test receiver"})
    assert r.status_code == 201, r.text
    return r.json()


async def test_events_are_delivered_signed_and_retried_after_500(triton_settings, tmp_path, backend, database,
                                                                 shared_data):
    receiver = Receiver(fail=2).start()
    try:
        async with running_api(settings_for(triton_settings, tmp_path, backend, database)) as api:
            hook = await subscribe(api, receiver.url)
            secret = hook["secret"]
            assert secret.startswith("whsec_") and hook["events"] == ["*"]
            listed = (await api.get("/webhooks")).text
            assert secret not in listed and receiver.url in listed  # the secret is shown once only

            biden = (await api.post("/register", data={"person_name": "Joe Biden"},
                                    files=photo(shared_data, BIDEN))).json()["person_id"]
            assert (await api.post("/analyze", files=photo(shared_data, BIDEN))).status_code == 200
            girl = [(await api.post("/analyze", files=photo(shared_data, GIRL))).json()["faces"][0]["person_id"]
                    for _ in range(2)]
            assert girl[0] == girl[1]
            woman = (await api.post("/analyze", files=photo(shared_data, WOMAN.format(0)))).json()["faces"][0]
            named = (await api.patch(f"/persons/{woman['person_id']}", json={"person_name": "Woman"})).json()
            assert (await api.delete(f"/persons/{named['person_id']}")).status_code == 200
            # a refused change queues nothing: merging a person into itself
            assert (await api.post(f"/persons/{biden}/merge", json={"into": biden})).status_code == 422

            got = await receiver.wait_for(6)
            by_type = {e["type"]: e for e in got.values()}
            assert sorted(by_type) == ["person.deleted", "person.known_seen", "person.merged",
                                       "person.unknown_created", "person.unknown_seen"]
            assert len(got) == 6  # two unknown_created: the girl and the woman
            seen = by_type["person.known_seen"]["data"]
            assert seen["person_id"] == biden and seen["person_name"] == "Joe Biden" and seen["similarity"] > 0.9
            assert seen["face"]["bbox"]["width"] > 50 and seen["face"]["gender"] in ("male", "female")
            assert by_type["person.unknown_seen"]["data"]["person_id"] == girl[0]
            assert by_type["person.unknown_seen"]["data"]["detection_count"] == 2
            assert by_type["person.merged"]["data"] == {"person_id": named["person_id"],
                                                       "merged_id": woman["person_id"], "identity": "known",
                                                       "reason": "named"}
            assert by_type["person.deleted"]["data"] == {"person_id": named["person_id"], "reason": "deleted"}

            # every request is signed: the client's helper and a hand-made HMAC agree
            for headers, body, _ in receiver.requests:
                assert verify_signature(secret, headers["x-fa-signature"], body)
                assert not verify_signature(secret, headers["x-fa-signature"], body + b" ")
                assert not verify_signature("another-secret-of-16", headers["x-fa-signature"], body)
                t, v1 = (p.split("=", 1)[1] for p in headers["x-fa-signature"].split(","))
                assert hmac.compare_digest(v1, hmac.new(secret.encode(), t.encode() + b"." + body,
                                                        hashlib.sha256).hexdigest())
                assert headers["x-fa-event-id"] == json.loads(body)["id"]
                assert headers["x-fa-event"] == json.loads(body)["type"]
            # the two answered 500 were sent again, the same event with the next attempt number
            failed = [(h["x-fa-event-id"], h["x-fa-delivery-attempt"]) for h, _, s in receiver.requests if s == 500]
            assert len(failed) == 2
            for event_id, attempt in failed:
                retries = [h["x-fa-delivery-attempt"] for h, _, s in receiver.requests
                           if h["x-fa-event-id"] == event_id and s < 300]
                assert retries and int(retries[0]) > int(attempt)
            # the outcome is on record
            for _ in range(100):
                state = (await api.get("/webhooks")).json()["webhooks"][0]
                if state["deliveries"]["pending"] == 0:
                    break
                await asyncio.sleep(0.1)
            assert state["deliveries"] == {"pending": 0, "delivered": 6, "failed": 0}
            assert state["last_error"] == "HTTP 500"
            rows = (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
            assert all(r["state"] == "delivered" for r in rows) and len(rows) == 6
            assert sum(r["attempts"] for r in rows) == len(receiver.requests) == 8  # 6 events + 2 retries
    finally:
        receiver.stop()


async def test_no_event_is_lost_while_the_receiver_is_down_and_across_an_api_restart(
        triton_settings, tmp_path, backend, database, shared_data):
    settings = settings_for(triton_settings, tmp_path, backend, database)
    receiver = Receiver().start()
    port = receiver.port
    async with running_api(settings) as api:
        hook = await subscribe(api, receiver.url, ["person.known_seen", "person.unknown_created"])
        receiver.stop()  # down: connections are refused
        await api.post("/register", data={"person_name": "Joe Biden"}, files=photo(shared_data, BIDEN))
        for rel in (BIDEN, GIRL, BIDEN):
            assert (await api.post("/analyze", files=photo(shared_data, rel))).status_code == 200
        # the worker keeps trying: attempts pile up, nothing is delivered, nothing is dropped
        for _ in range(300):
            rows = (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
            if len(rows) == 3 and min(r["attempts"] for r in rows) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(rows) == 3 and all(r["state"] == "pending" and r["attempts"] >= 2 for r in rows)
        assert {r["last_error"] for r in rows} == {"ConnectError"}
        queued = {r["event_id"] for r in rows}
    # the API stops with the receiver still down; the receiver comes back, then the API
    receiver = Receiver(port=port).start()
    try:
        assert receiver.delivered() == {}
        async with running_api(settings) as api:
            got = await receiver.wait_for(3)
            assert set(got) == queued
            assert sorted(e["type"] for e in got.values()) == ["person.known_seen", "person.known_seen",
                                                               "person.unknown_created"]
            for headers, body, _ in receiver.requests:
                assert verify_signature(hook["secret"], headers["x-fa-signature"], body)
    finally:
        receiver.stop()


async def test_subscriptions_are_validated_and_deleted(api):
    # the default settings: deliveries only to public addresses (SSRF), any host name
    for body in ({"url": "ftp://example.com/x", "events": ["*"]},
                 {"url": "http://hooks.example.com/x", "events": ["person.sneezed"]},
                 {"url": "http://hooks.example.com/x", "events": []},
                 {"url": "http://hooks.example.com/x", "events": ["*"], "secret": "short"},
                 {"url": "http://user:pw@hooks.example.com/x", "events": ["*"]},
                 {"url": "http://127.0.0.1:9/x", "events": ["*"]},
                 {"url": "http://169.254.169.254/latest/meta-data", "events": ["*"]},
                 {"url": "http://[::1]:9/x", "events": ["*"]},
                 {"url": "http://10.1.2.3/x", "events": ["*"]}):
        r = await api.post("/webhooks", json=body)
        assert r.status_code == 422, (body, r.text)
    assert "FA_WEBHOOK_ALLOW_PRIVATE" in (await api.post("/webhooks", json={
        "url": "http://127.0.0.1:9/x", "events": ["*"]})).json()["message"]
    hook = (await api.post("/webhooks", json={"url": "http://hooks.example.com/x", "events": ["person.deleted"],
                                              "secret": "s" * 32})).json()
    assert hook["secret"] == "s" * 32 and hook["events"] == ["person.deleted"]
    assert (await api.delete(f"/webhooks/{hook['id']}")).status_code == 200
    assert (await api.delete(f"/webhooks/{hook['id']}")).status_code == 404
    assert (await api.get("/webhooks")).json()["webhooks"] == []


async def test_a_host_name_that_resolves_inside_the_network_gets_no_delivery(tmp_path):
    """Checked at delivery, after resolving: 'localhost' passes the subscription check (a name)
    but resolves to loopback, so nothing is sent and the attempt records why."""
    from api.repository import Repository
    from api.webhooks import Deliverer, Event, Webhooks
    from core.settings import DatabaseSettings, MySQLSettings, Settings

    receiver = Receiver().start()
    strict = FAST.model_copy(update={"allow_private": False})
    settings = Settings(mysql=MySQLSettings(host=None), webhooks=strict,
                        database=DatabaseSettings(sqlite_path=tmp_path / "hooks.sqlite3"))
    repo = Repository(settings)
    await repo.start()
    try:
        url = receiver.url.replace("127.0.0.1", "localhost")
        sid, _ = await repo.add_subscription(url, "s" * 32, "*", "inside")
        hooks = Webhooks(repo, strict)
        await hooks.refresh()
        async with repo.transaction() as tx:
            await hooks.queue(tx, [Event("person.deleted", {"person_id": "unknown_x", "reason": "deleted"})])
        deliverer = Deliverer(repo, hooks, strict)
        async with httpx.AsyncClient(trust_env=False) as client:
            assert await deliverer.deliver_due(client) == 1
        assert receiver.requests == []
        row = (await repo.list_subscriptions())[0]
        assert row[-1] == "address_not_allowed" and row[5] == 1  # still pending, retried later

        # the guard was the only obstacle: where private receivers are allowed, the retry arrives
        await asyncio.sleep(0.5)  # past the first backoff (0.2 s +-20%)
        async with httpx.AsyncClient(trust_env=False) as client:
            assert await Deliverer(repo, hooks, FAST).deliver_due(client) == 1
        assert len(receiver.delivered()) == 1
    finally:
        await repo.close()
        receiver.stop()


async def test_retention_purge_by_the_maintenance_command_queues_person_deleted(
        triton_settings, tmp_path, backend, database, shared_data):
    from api.maintenance import purge

    settings = settings_for(triton_settings, tmp_path, backend, database)
    receiver = Receiver().start()
    try:
        async with running_api(settings) as api:
            await subscribe(api, receiver.url, ["person.deleted"])
            girl = (await api.post("/analyze", files=photo(shared_data, GIRL))).json()["faces"][0]["person_id"]
            assert await purge(settings, days=0) == [girl]  # another process's transaction, no cache
            got = await receiver.wait_for(1)
            assert [e["data"] for e in got.values()] == [{"person_id": girl, "reason": "retention"}]
    finally:
        receiver.stop()


def test_subscriptions_from_the_maintenance_command(tmp_path, backend, database):
    """add-webhook / list-webhooks / remove-webhook against the real database, as an operator runs them."""
    import os
    import subprocess
    import sys

    from core.settings import PROJECT_ROOT
    from tests.integration.conftest import MYSQL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "FA_"))}
    env["FA_DB_SQLITE_PATH"] = str(tmp_path / "cli.sqlite3")
    if backend == "mysql":
        env.update(MYSQL_HOST=MYSQL.host, MYSQL_PORT=str(MYSQL.port), MYSQL_USER=MYSQL.user,
                   MYSQL_PASSWORD=MYSQL.password, MYSQL_DATABASE=database)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "api.maintenance", *args], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    refused = cli("add-webhook", "http://127.0.0.1:9/hook", "--events", "*")
    assert refused.returncode == 2 and "FA_WEBHOOK_ALLOW_PRIVATE" in refused.stderr
    env["FA_WEBHOOK_ALLOW_PRIVATE"] = "true"
    out = cli("add-webhook", "http://127.0.0.1:9/hook", "--events", "person.merged,person.deleted")
    assert out.returncode == 0, out.stderr
    sid, secret = out.stdout.split(":")[0].split()[1], out.stdout.split("shown once): ")[1].strip()
    assert secret.startswith("whsec_")
    listed = cli("list-webhooks")
    assert f"{sid}\thttp://127.0.0.1:9/hook\tperson.merged,person.deleted\tpending 0" in listed.stdout
    assert secret not in listed.stdout
    assert cli("add-webhook", "file:///etc/passwd", "--events", "*").returncode == 2
    assert cli("add-webhook", "http://127.0.0.1:9/x", "--events", "person.sneezed").returncode == 2
    assert cli("remove-webhook", sid).returncode == 0
    assert cli("remove-webhook", sid).returncode == 1
    assert cli("list-webhooks").stdout == ""
