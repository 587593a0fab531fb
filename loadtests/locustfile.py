"""Realistic traffic against a running Face Analytics API, sent through face_analytics_client.

Mostly /analyze with real photos holding 0..N faces (some with include=quality, some with
candidates=3, some as batches of 4 through /analyze/batch), some /register, /stats and /health.
The client's typed results check the contract (a missing field fails the request), and its
retries are off: a 429 or 503 is counted as a failure, not hidden. Options (CLI, locust.conf
or LOCUST_* environment): --photos DIR (default ../shared/data), --api-key KEY.

    make loadtest                       # headless, bounded, CSV + PNG in loadtests/results/
    locust -f loadtests/locustfile.py   # web UI on :8089
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

from locust import User, between, events, task

from face_analytics_client import NO_RETRY, ApiError, FaceAnalyticsClient

IMAGE_TYPES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
PHOTOS: list[tuple[str, bytes]] = []


class ContractError(Exception):
    """The answer arrived but breaks the API contract."""


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--photos", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"),
                        env_var="LOCUST_PHOTOS", help="folder searched recursively for photos to upload")
    # also from the environment, so compose can pass an empty key without an empty --api-key
    parser.add_argument("--api-key", default="", env_var="LOCUST_API_KEY",
                        help="X-API-Key header, if auth is on")


@events.test_start.add_listener
def _load_photos(environment, **_):
    root = Path(environment.parsed_options.photos)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_TYPES)
    if not files:
        raise SystemExit(f"no photos under {root}")
    PHOTOS[:] = [(p.name, p.read_bytes()) for p in files]


class FaceAnalyticsUser(User):
    wait_time = between(0.0, 0.2)
    _names = itertools.count()

    def on_start(self):
        key = self.environment.parsed_options.api_key or None
        self.fa = FaceAnalyticsClient(self.host, api_key=key, retry=NO_RETRY, timeout=60)

    def on_stop(self):
        self.fa.close()

    def _measure(self, method: str, name: str, call, accept=lambda exc: False):
        """Time one client call and report it to locust's statistics."""
        started, exc = time.perf_counter(), None
        try:
            call()
        except ApiError as e:
            exc = None if accept(e) else e
        except Exception as e:  # noqa: BLE001 - contract and transport failures are failures
            exc = e
        self.environment.events.request.fire(request_type=method, name=name, context={},
                                             response_time=(time.perf_counter() - started) * 1000,
                                             response_length=0, exception=exc)

    @task(20)
    def analyze(self):
        _, data = random.choice(PHOTOS)

        def call():
            for face in self.fa.analyze(data).faces:
                if face.identity not in ("known", "unknown") or face.gender not in ("male", "female"):
                    raise ContractError("identity/gender outside the contract")

        self._measure("POST", "/analyze", call)

    @task(4)
    def analyze_with_quality(self):
        _, data = random.choice(PHOTOS)

        def call():
            for face in self.fa.analyze(data, include="quality").faces:
                if face.quality is None or not 0 <= face.quality.overall <= 1:
                    raise ContractError("include=quality without a quality in [0, 1]")

        self._measure("POST", "/analyze?include=quality", call)

    @task(3)
    def analyze_with_candidates(self):
        _, data = random.choice(PHOTOS)

        def call():
            for face in self.fa.analyze(data, candidates=3).faces:
                sims = [c.similarity for c in face.candidates or []]
                if face.candidates is None or len(sims) > 3 or sims != sorted(sims, reverse=True):
                    raise ContractError("candidates=3 without at most 3 candidates, best first")

        self._measure("POST", "/analyze?candidates=3", call)

    @task(2)
    def analyze_batch(self):
        photos = random.sample(PHOTOS, k=min(4, len(PHOTOS)))

        def call():
            batch = self.fa.analyze_batch([data for _, data in photos])
            if len(batch.results) != len(photos):
                raise ContractError("a batch answer without one result per photo")

        self._measure("POST", "/analyze/batch", call)

    @task(1)
    def register(self):
        _, data = random.choice(PHOTOS)

        def call():
            if not self.fa.register(data, f"Load Test {next(self._names)}").person_id.startswith("known_"):
                raise ContractError("person_id is not a known_ id")

        # photos with 0 or several faces are refused by contract (400), and so is a face already
        # enrolled under another name (409 face_matches_other_person): both are correct answers
        self._measure("POST", "/register", call, accept=lambda e: e.status in (400, 409))

    @task(2)
    def stats(self):
        self._measure("GET", "/stats", self.fa.stats)

    @task(1)
    def health(self):
        def call():
            if not self.fa.health().healthy:
                raise ContractError("not healthy")

        self._measure("GET", "/health", call)
