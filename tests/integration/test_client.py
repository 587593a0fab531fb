"""face_analytics_client and its CLI against the API served by a real uvicorn (real Triton,
SQLite and MariaDB). Faults a real server cannot be made to give on demand (a 503 that goes
away) are injected by a transport in front of the real one."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from api.auth import key_hash
from core.settings import AuthSettings
from face_analytics_client import (
    NO_RETRY, Analysis, ApiError, AsyncFaceAnalyticsClient, ConnectionFailed, Face, FaceAnalyticsClient,
    Retry, Stats,
)
from face_analytics_client.cli import main as cli_main
from tests.conftest import PROJECT_ROOT
from tests.integration.conftest import api_settings, mysql_database, served_api

pytestmark = pytest.mark.triton

GROUP = "detection/images/friends_t1.jpg"
BIDEN = "verification/images/Joe_Biden/biden.jpg"
HOPPER = "verification/images/Grace_Hopper/grace_hopper.jpg"
FAST = Retry(attempts=4, backoff_s=0.01)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def base_url(request, triton_settings, tmp_path):
    if request.param == "mysql":
        with mysql_database() as name, served_api(api_settings(triton_settings, tmp_path, "mysql", name)) as url:
            yield url
    else:
        with served_api(api_settings(triton_settings, tmp_path, "sqlite")) as url:
            yield url


def test_sync_client_drives_every_endpoint(base_url, shared_data):
    with FaceAnalyticsClient(base_url, retry=FAST) as fa:
        assert fa.health().healthy
        group = fa.analyze(shared_data / GROUP)
        assert isinstance(group, Analysis) and len(group.faces) >= 5
        assert all(isinstance(f, Face) and f.identity == "unknown" for f in group.faces)
        assert group.image["width"] > 0

        reg = fa.register(shared_data / BIDEN, "Joseph Robinette")
        assert reg.person_id.startswith("known_joseph_robinette_") and reg.samples == 1
        again = fa.analyze((shared_data / BIDEN).read_bytes())
        assert [f.label for f in again.faces] == ["Joseph Robinette"]
        assert again.faces[0].similarity > 0.363

        # search: part of the name, any case; and part of an id
        page = fa.persons(search="robinet")
        assert [p.person_id for p in page.persons] == [reg.person_id] and page.total == 1
        unknown_id = group.faces[0].person_id
        assert [p.person_id for p in fa.persons(search=unknown_id[-6:]).persons] == [unknown_id]
        assert fa.persons(identity="unknown").total == len({f.person_id for f in group.faces})
        assert fa.persons(search="100%_!").total == 0  # LIKE wildcards are taken literally

        assert fa.crop(reg.person_id)[:2] == b"\xff\xd8" and fa.crop(unknown_id)[:2] == b"\xff\xd8"

        stats = fa.stats()
        assert isinstance(stats, Stats) and stats.known_faces == 1
        assert stats.total_detections == len(group.faces) + 1
        hours, days = fa.detections("24h"), fa.detections("30d")
        assert len(hours.buckets) == 24 and len(days.buckets) == 30
        assert sum(b.count for b in hours.buckets) == sum(b.count for b in days.buckets) == stats.total_detections

        renamed = fa.rename(unknown_id, "Friend One")
        assert renamed.person_id.startswith("known_friend_one_")
        assert fa.person(renamed.person_id).person_name == "Friend One"
        assert fa.delete_person(renamed.person_id).person_id == renamed.person_id
        with pytest.raises(ApiError) as exc:
            fa.person(renamed.person_id)
        assert (exc.value.status, exc.value.code) == (404, "not_found")
        with pytest.raises(ApiError) as exc:
            fa.detections("7d")
        assert exc.value.status == 422


async def test_async_client_batches_in_input_order(base_url, shared_data):
    photos = [shared_data / p for p in (GROUP, BIDEN, HOPPER, BIDEN)]
    with FaceAnalyticsClient(base_url) as fa:
        one_by_one = [fa.analyze(p) for p in photos]
        bad = fa.analyze_many([photos[1], b"not an image"], concurrency=2, return_exceptions=True)
    assert isinstance(bad[0], Analysis) and isinstance(bad[1], ApiError) and bad[1].status in (400, 415)
    async with AsyncFaceAnalyticsClient(base_url, retry=FAST) as fa:
        batch = await fa.analyze_many(photos, concurrency=3)
        # every photo twice, plus Biden once more in the batch with the broken file
        assert (await fa.stats()).total_detections == 2 * sum(len(a.faces) for a in one_by_one) + 1
    assert [(a.image, len(a.faces)) for a in batch] == [(a.image, len(a.faces)) for a in one_by_one]
    # the same person twice keeps one id across the batch and the earlier single calls
    assert batch[1].faces[0].person_id == batch[3].faces[0].person_id == one_by_one[1].faces[0].person_id


def test_identity_endpoints_through_the_client(base_url, shared_data):
    with FaceAnalyticsClient(base_url, retry=FAST) as fa:
        known = fa.register(shared_data / BIDEN, "Joe Biden").person_id
        assert fa.analyze(shared_data / BIDEN).faces[0].person_id == known
        assert fa.verify(shared_data / BIDEN, person_id=known).verified
        other = fa.verify(shared_data / BIDEN, shared_data / HOPPER)
        assert not other.verified and other.face2.faces_in_image == 1

        # search and detect write nothing; detect has no identities at all
        before = fa.stats()
        assert fa.analyze(shared_data / BIDEN, mode="search").faces[0].person_id == known
        detected = fa.analyze(shared_data / GROUP, mode="detect").faces
        assert len(detected) >= 5 and {f.person_id for f in detected} == {None}
        assert fa.stats().total_detections == before.total_detections

        unknown = fa.analyze(shared_data / HOPPER).faces[0].person_id
        merged = fa.merge(unknown, into=known)
        assert (merged.person_id, merged.merged_id, merged.identity) == (known, unknown, "known")
        samples = fa.samples(known).samples
        assert len(samples) == 2 and all(s.has_crop for s in samples)
        assert fa.sample_crop(known, samples[0].sample_id)[:2] == b"\xff\xd8"
        seen = fa.sightings(known, limit=1)
        assert seen.total == 2 and len(seen.sightings) == 1 and seen.sightings[0].identity == "known"
        assert fa.delete_sample(known, samples[1].sample_id).samples == 1
        with pytest.raises(ApiError) as exc:
            fa.person(unknown)
        assert exc.value.status == 404


class FlakyTransport(httpx.BaseTransport):
    """Answers the first `fail` requests with `status` (as a busy or recovering API does), then
    passes everything to the real server."""

    def __init__(self, status: int, fail: int, retry_after: str | None = None):
        self.real, self.status, self.fail, self.retry_after, self.seen = httpx.HTTPTransport(), status, fail, retry_after, 0

    def handle_request(self, request):
        self.seen += 1
        if self.seen <= self.fail:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(self.status, headers=headers,
                                  json={"success": False, "error": "injected", "message": "try later"})
        return self.real.handle_request(request)


def test_retries_on_503_and_429_then_gives_up(base_url, shared_data):
    for status, retry_after in ((503, None), (429, "0")):
        flaky = FlakyTransport(status, fail=2, retry_after=retry_after)
        with FaceAnalyticsClient(base_url, retry=FAST, transport=flaky) as fa:
            assert len(fa.analyze(shared_data / BIDEN).faces) == 1
        assert flaky.seen == 3
    flaky = FlakyTransport(503, fail=10)
    with FaceAnalyticsClient(base_url, retry=FAST, transport=flaky) as fa, pytest.raises(ApiError) as exc:
        fa.stats()
    assert (exc.value.status, exc.value.code, flaky.seen) == (503, "injected", 4)
    # 400 is the caller's fault: never retried
    flaky = FlakyTransport(400, fail=1)
    with FaceAnalyticsClient(base_url, retry=FAST, transport=flaky) as fa, pytest.raises(ApiError):
        fa.stats()
    assert flaky.seen == 1
    with pytest.raises(ConnectionFailed):
        FaceAnalyticsClient("http://127.0.0.1:9", retry=Retry(attempts=2, backoff_s=0.01)).stats()


def test_api_key_and_real_rate_limit(triton_settings, tmp_path, shared_data):
    auth = AuthSettings(enabled=True, key_hashes=key_hash("s3cret"), rate_limit_per_minute=2)
    with served_api(api_settings(triton_settings, tmp_path, "sqlite", auth=auth)) as url:
        with FaceAnalyticsClient(url, retry=NO_RETRY) as anonymous, pytest.raises(ApiError) as exc:
            anonymous.stats()
        assert (exc.value.status, exc.value.code) == (401, "unauthorized")
        with FaceAnalyticsClient(url, api_key="s3cret", retry=NO_RETRY) as fa:
            fa.stats()
            fa.stats()
            with pytest.raises(ApiError) as exc:  # the bucket of 2 is empty: the server's own 429
                fa.stats()
            assert (exc.value.status, exc.value.code) == (429, "rate_limited")


def test_cli_prints_tables(base_url, shared_data, capsys):
    assert cli_main(["--url", base_url, "--health"]) == 0
    out = capsys.readouterr().out
    assert "status: healthy" in out and "face_multitask" in out

    assert cli_main(["--url", base_url, str(shared_data / HOPPER), "--register", "Grace Hopper"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Successfully registered Grace Hopper: known_grace_hopper_")
    header = next(i for i, line in enumerate(out) if line.startswith("#  who"))
    assert out[header + 2].split()[1:3] == ["Grace", "Hopper"]

    assert cli_main(["--url", base_url, str(shared_data / GROUP), "--stats"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:1].isdigit()]
    faces = int(out.split("Successfully analyzed ")[1].split()[0])
    assert faces >= 5 and len(rows) == faces
    assert "known people" in out and "top unknown people" in out

    # the spec's usage line, as a separate process; an unreachable API is exit code 3
    spec = subprocess.run([sys.executable, "test_api.py", str(shared_data / BIDEN), "--url", base_url],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert spec.returncode == 0, spec.stderr
    assert "Successfully analyzed 1 face(s)" in spec.stdout and "male" in spec.stdout
    down = subprocess.run([sys.executable, "test_api.py", "--health", "--url", "http://127.0.0.1:9"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert down.returncode == 3 and "cannot reach" in down.stderr
    assert cli_main(["--url", base_url, str(shared_data / GROUP), "--mode", "detect"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert len(rows) == faces and {r[1:3] == ["-", "-"] for r in rows} == {True}
    assert cli_main(["--url", base_url, str(shared_data / BIDEN), "--register", ""]) == 1
    assert "422" in capsys.readouterr().err
