"""Realistic traffic against a running Face Analytics API.

Mostly /analyze with real photos holding 0..N faces, some /register, /stats and /health.
Responses are checked for their contract, not only their status code. Options (CLI,
locust.conf or LOCUST_* environment): --photos DIR (default ../shared/data), --api-key KEY.

    make loadtest                       # headless, bounded, CSV + PNG in loadtests/results/
    locust -f loadtests/locustfile.py   # web UI on :8089
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from locust import HttpUser, between, events, task

IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
               ".webp": "image/webp", ".bmp": "image/bmp"}
FACE_KEYS = {"bbox", "confidence", "age", "gender", "gender_confidence", "identity", "person_id"}
PHOTOS: list[tuple[str, bytes, str]] = []


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--photos", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"),
                        help="folder searched recursively for photos to upload")
    parser.add_argument("--api-key", default="", help="X-API-Key header, if auth is on")


@events.test_start.add_listener
def _load_photos(environment, **_):
    root = Path(environment.parsed_options.photos)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_TYPES)
    if not files:
        raise SystemExit(f"no photos under {root}")
    PHOTOS[:] = [(p.name, p.read_bytes(), IMAGE_TYPES[p.suffix.lower()]) for p in files]


class FaceAnalyticsUser(HttpUser):
    wait_time = between(0.0, 0.2)
    _names = itertools.count()

    def on_start(self):
        key = self.environment.parsed_options.api_key
        if key:
            self.client.headers["X-API-Key"] = key

    def _photo(self):
        return random.choice(PHOTOS)

    @task(20)
    def analyze(self):
        name, data, ctype = self._photo()
        with self.client.post("/analyze", files={"file": (name, data, ctype)},
                              name="/analyze", catch_response=True) as r:
            if r.status_code != 200:
                return r.failure(f"status {r.status_code}")
            body = r.json()
            if body.get("success") is not True or not isinstance(body.get("faces"), list):
                return r.failure("not a success with a faces list")
            for face in body["faces"]:
                if not FACE_KEYS <= face.keys():
                    return r.failure(f"face misses {sorted(FACE_KEYS - face.keys())}")
                if face["identity"] not in ("known", "unknown") or face["gender"] not in ("male", "female"):
                    return r.failure("identity/gender outside the contract")
            r.success()

    @task(1)
    def register(self):
        name, data, ctype = self._photo()
        person = f"Load Test {next(self._names)}"
        with self.client.post("/register", files={"file": (name, data, ctype)},
                              data={"person_name": person}, name="/register",
                              catch_response=True) as r:
            # photos with 0 or several faces are refused by contract: 400 is a correct answer
            if r.status_code == 400 and r.json().get("success") is False:
                return r.success()
            if r.status_code != 200 or not r.json().get("person_id", "").startswith("known_"):
                return r.failure(f"status {r.status_code}")
            r.success()

    @task(2)
    def stats(self):
        with self.client.get("/stats", catch_response=True) as r:
            body = r.json() if r.status_code == 200 else {}
            if "known_faces" not in body or "top_unknown_faces" not in body:
                return r.failure(f"status {r.status_code} or missing fields")
            r.success()

    @task(1)
    def health(self):
        with self.client.get("/health", catch_response=True) as r:
            if r.status_code != 200 or r.json().get("status") != "healthy":
                return r.failure(f"status {r.status_code}")
            r.success()
