"""{"url": ...} on /analyze and /register against a real local HTTP server, through the real
Triton: allowed, refused (switched off, host not listed, private address), too large, too
slow, redirected."""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.settings import UrlFetchSettings
from tests.integration.conftest import api_settings, running_api
from tools.triton_local import free_port

pytestmark = pytest.mark.triton

BIDEN = "verification/images/Joe_Biden/biden.jpg"


@contextlib.contextmanager
def image_server(photo: bytes):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/photo.jpg":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(photo)))
                self.end_headers()
                self.wfile.write(photo)
            elif self.path == "/slow.jpg":
                time.sleep(3)
                self.send_response(200)
                self.end_headers()
            elif self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.end_headers()
            else:
                self.send_response(404)
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def test_url_fetch_rules(triton_settings, tmp_path, shared_data):
    photo = (shared_data / BIDEN).read_bytes()
    with image_server(photo) as port:
        base = f"http://localhost:{port}"
        allowed = UrlFetchSettings(enabled=True, allowed_hosts="localhost", allow_private=True, timeout_s=1.0,
                                   max_bytes=len(photo) + 10)
        async with running_api(api_settings(triton_settings, tmp_path, "sqlite", url_fetch=allowed)) as api:
            r = await api.post("/analyze", json={"url": f"{base}/photo.jpg"})
            assert r.status_code == 200, r.text
            assert len(r.json()["faces"]) == 1
            r = await api.post("/register", json={"url": f"{base}/photo.jpg", "person_name": "Joe"})
            assert r.status_code == 200, r.text
            cases = [
                (f"http://127.0.0.1:{port}/photo.jpg", 400, "url_not_allowed"),  # not the listed name
                (f"{base}/slow.jpg", 400, "url_fetch_failed"),
                (f"{base}/redirect", 400, "url_fetch_failed"),  # redirects are not followed
                (f"{base}/missing.jpg", 400, "url_fetch_failed"),
                (f"http://user:pw@localhost:{port}/photo.jpg", 400, "url_not_allowed"),
                (f"ftp://localhost:{port}/photo.jpg", 422, "invalid_field"),
            ]
            for url, status, code in cases:
                r = await api.post("/analyze", json={"url": url})
                assert (r.status_code, r.json()["error"]) == (status, code), (url, r.text)

        small = allowed.model_copy(update={"max_bytes": len(photo) // 2})
        async with running_api(api_settings(triton_settings, tmp_path, "sqlite", url_fetch=small)) as api:
            r = await api.post("/analyze", json={"url": f"{base}/photo.jpg"})
            assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

        public_only = allowed.model_copy(update={"allow_private": False})
        async with running_api(api_settings(triton_settings, tmp_path, "sqlite", url_fetch=public_only)) as api:
            r = await api.post("/analyze", json={"url": f"{base}/photo.jpg"})
            assert r.status_code == 400 and r.json()["error"] == "url_not_allowed"
            assert "private" in r.json()["message"]

        async with running_api(api_settings(triton_settings, tmp_path / "off", "sqlite")) as api:  # default: off
            r = await api.post("/analyze", json={"url": f"{base}/photo.jpg"})
            assert r.status_code == 400 and r.json()["error"] == "url_not_allowed"
            assert (await api.get("/stats")).json()["total_detections"] == 0
