"""/analyze with the photo as the request body itself (Content-Type image/* or
application/octet-stream), through the real Triton and models: the same answers as multipart,
the same errors and limits (413 before the body is read), and the client sending it this way."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from core.settings import UploadSettings
from face_analytics_client import FaceAnalyticsClient
from tests.integration.conftest import api_settings, running_api, served_api

pytestmark = pytest.mark.triton

GROUP = "detection/images/friends_t1.jpg"
BIDEN = "verification/images/Joe_Biden/biden.jpg"
COFFEE = "no_face/images/coffee.png"
WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f0042.jpg"  # 50 kB, one face


def raw(data: bytes, ctype: str = "image/jpeg") -> dict:
    return {"content": data, "headers": {"content-type": ctype}}


async def test_raw_body_gives_the_same_answer_as_multipart(api, shared_data):
    group = (shared_data / GROUP).read_bytes()
    multipart = (await api.post("/analyze", files={"file": ("g.jpg", group, "image/jpeg")})).json()
    assert len(multipart["faces"]) == 6
    # the type is read from the bytes: a JPEG labelled image/png, or not labelled at all, is a JPEG
    for ctype in ("image/jpeg", "image/png", "application/octet-stream", "image/jpeg; charset=binary"):
        r = await api.post("/analyze", **raw(group, ctype))
        assert r.status_code == 200, (ctype, r.text)
        body = r.json()
        assert body["image"] == multipart["image"]
        assert [f["bbox"] for f in body["faces"]] == [f["bbox"] for f in multipart["faces"]]
        # the same people: each raw request matched the unknowns the multipart one created
        assert [f["person_id"] for f in body["faces"]] == [f["person_id"] for f in multipart["faces"]]
    stats = (await api.get("/stats")).json()
    assert stats["unknown_faces"] == 6 and stats["total_detections"] == 6 * 5

    # query options apply as with any upload; a PNG without faces is a success with no faces
    r = await api.post("/analyze", params={"include": "quality,landmarks", "mode": "search"},
                       **raw((shared_data / BIDEN).read_bytes()))
    face = r.json()["faces"][0]
    assert r.status_code == 200 and "quality" in face and len(face["landmarks"]) == 5
    assert face["person_id"] is None  # search mode: nobody matched, nothing written
    r = await api.post("/analyze", **raw((shared_data / COFFEE).read_bytes(), "image/png"))
    assert r.status_code == 200 and r.json()["faces"] == []
    assert (await api.get("/stats")).json()["total_detections"] == stats["total_detections"]


@pytest.mark.parametrize("data, ctype, status, code", [
    (b"", "image/jpeg", 400, "invalid_image"),
    (b"plain text, not an image", "image/jpeg", 415, "unsupported_media_type"),
    (b"\xff\xd8\xff", "application/octet-stream", 400, "invalid_image"),
    (b"hello", "text/plain", 415, "unsupported_media_type"),  # neither an image body nor multipart/JSON
])
async def test_raw_body_errors(api, data, ctype, status, code):
    r = await api.post("/analyze", **raw(data, ctype))
    assert r.status_code == status, r.text
    assert r.json() == {"success": False, "error": code, "message": r.json()["message"]}
    assert (await api.get("/stats")).json()["total_detections"] == 0


async def test_raw_body_only_on_analyze(api, shared_data):
    """/register needs its name beside the photo and /analyze/batch several photos: a bare image
    body is refused there as before, and nothing is written."""
    photo = (shared_data / BIDEN).read_bytes()
    r = await api.post("/register", **raw(photo))
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    r = await api.post("/analyze/batch", **raw(photo))
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    stats = (await api.get("/stats")).json()
    assert stats["known_faces"] == stats["total_detections"] == 0


async def _drive(app, body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """One POST /analyze straight into the ASGI app: (status, body bytes the app pulled)."""
    pulled, status, done = [0], [], asyncio.Event()
    pending = list(body_chunks)

    async def receive():
        if pending:
            chunk = pending.pop(0)
            pulled[0] += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif not message.get("more_body"):
            done.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/analyze", "raw_path": b"/analyze", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"api"), (b"content-type", b"image/jpeg"), *headers],
             "client": ("127.0.0.1", 5000), "server": ("api", 80), "state": {}}
    await app(scope, receive, send)
    return status[0], pulled[0]


async def test_raw_body_over_the_limit_is_refused_before_it_is_read(triton_settings, tmp_path, shared_data):
    limit = 100_000
    settings = api_settings(triton_settings, tmp_path, "sqlite", upload=UploadSettings(max_bytes=limit))
    chunk = b"\xff\xd8\xff" + b"\x00" * (64 * 1024 - 3)
    async with running_api(settings) as api:
        # declared too large: refused from Content-Length alone, not a byte pulled (the middleware
        # lets it through: its cap allows multipart and base64 framing around the file)
        length = str(limit + 1).encode()
        assert await _drive(api.app, [chunk, chunk], [(b"content-length", length)]) == (413, 0)
        # chunked, no length: reading stops at the chunk that passes the limit
        status, pulled = await _drive(api.app, [chunk] * 16, [])
        assert status == 413 and pulled <= limit + len(chunk)
        # a photo within the limit still goes through
        photo = (shared_data / WOMAN).read_bytes()
        assert len(photo) < limit
        assert await _drive(api.app, [photo[:5000], photo[5000:]], []) == (200, len(photo))
        r = await api.post("/analyze", **raw(b"\xff\xd8\xff" + b"\x00" * limit))
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        assert (await api.get("/stats")).json()["total_detections"] == 1


class Recording(httpx.HTTPTransport):
    """The real transport, keeping what the client sent."""

    def __init__(self):
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request):
        self.sent.append(request)
        return super().handle_request(request)


def test_the_client_sends_the_photo_as_the_body(triton_settings, tmp_path, shared_data):
    """Through a real uvicorn: the client's /analyze is one raw image body, and answers as the
    multipart upload of the same photo does."""
    photo = shared_data / GROUP
    with served_api(api_settings(triton_settings, tmp_path, "sqlite")) as url:
        recording = Recording()
        with FaceAnalyticsClient(url, transport=recording) as fa:
            ours = fa.analyze(photo)
            from_bytes = fa.analyze(photo.read_bytes())
        sent = [r for r in recording.sent if r.url.path == "/analyze"]
        assert [r.headers["content-type"] for r in sent] == ["image/jpeg", "application/octet-stream"]
        assert all(r.content == photo.read_bytes() for r in sent)
        multipart = httpx.post(f"{url}/analyze", files={"file": ("g.jpg", photo.read_bytes())}, timeout=120).json()
    assert [f.person_id for f in ours.faces] == [f.person_id for f in from_bytes.faces] == \
        [f["person_id"] for f in multipart["faces"]]
    assert [(f.bbox.x, f.bbox.y, f.bbox.width, f.bbox.height) for f in ours.faces] == \
        [tuple(f["bbox"].values()) for f in multipart["faces"]]
