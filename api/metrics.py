"""Prometheus metrics of the API (scraped at /metrics).

With several uvicorn workers set PROMETHEUS_MULTIPROC_DIR (prometheus_client reads it) so
that /metrics aggregates all workers.
"""

from __future__ import annotations

import time

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

REQUESTS = Counter("face_api_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram("face_api_request_seconds", "HTTP request latency", ["endpoint"],
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4))
FACES = Histogram("face_api_faces_per_image", "faces found per analysed image",
                  buckets=(0, 1, 2, 3, 5, 8, 13, 21))
TRITON_LATENCY = Histogram("face_api_triton_seconds", "face_pipeline call latency",
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2))
IDENTITIES = Counter("face_api_identities_total", "identity decisions", ["outcome"])


def render(multiprocess_dir: str | None) -> tuple[bytes, str]:
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

REJECTED = Counter("face_api_rejected_total", "requests refused before any work", ["reason"])
# admission slots held by image requests (a batch holds one per photo); summed over live workers
ADMISSION_SLOTS = Gauge("face_api_admission_slots_in_use", "admission slots held by image requests",
                        multiprocess_mode="livesum")


class Observe:
    """ASGI middleware: REQUESTS and LATENCY per route, taken when the response starts.

    Plain ASGI rather than @app.middleware("http"): Starlette's BaseHTTPMiddleware runs the app
    in a task group of its own and passes every body chunk of the upload and of the answer
    through anyio streams and a task group per receive(), which cost more CPU than the rest of
    the middleware stack together.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def observed_send(message):
            if message["type"] == "http.response.start":
                # the router has put the matched route in the scope by now
                endpoint = getattr(scope.get("route"), "path", "unmatched")
                REQUESTS.labels(endpoint, scope["method"], str(message["status"])).inc()
                LATENCY.labels(endpoint).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, observed_send)
