"""GET /health: Triton model readiness and the database; 503 unless healthy.

With several Triton replicas (TRITON_GRPC_URL dns:///... or a list) it also lists the model
versions each replica serves and flags a skew: replicas serving different versions, as
while a publish goes round. A skew is reported, not counted as degraded: it is expected
for the seconds a publish takes (docs/kubernetes.md). `gallery` says which face_multitask version
the gallery's embeddings are in and whether identity is paused (not counted as degraded either:
faces are still found, and a reembed ends it).

Answered from a per-worker cache refreshed at most every FA_HEALTH_CACHE_S: a flood of /health
calls costs one round of Triton and database checks per interval, and while a refresh waits
on a part that hangs, callers get the last answer after 0.5 s instead of waiting with it.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.errors import GalleryReembedding, health_status
from api.deps import Services, ServicesDep
from api.schemas import HealthResponse

router = APIRouter()
STALE_AFTER_S = 0.5


class HealthCache:
    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self.body: tuple[int, dict] | None = None
        self.at = float("-inf")
        self.refresh: asyncio.Task | None = None

    async def get(self, parts: Services) -> tuple[int, dict]:
        if self.body is not None and time.monotonic() - self.at < self.ttl_s:
            return self.body
        if self.refresh is None or self.refresh.done():
            self.refresh = asyncio.create_task(self._compute(parts))
        if self.body is None:
            return await asyncio.shield(self.refresh)
        # a fresh answer if the parts answer promptly, else the last one while the refresh runs
        done, _ = await asyncio.wait({self.refresh}, timeout=STALE_AFTER_S)
        return self.refresh.result() if done else self.body

    async def _compute(self, parts: Services) -> tuple[int, dict]:
        models, db_ok, replicas = await asyncio.gather(parts.inference.model_status(), parts.repo.ping(),
                                                       parts.inference.replica_status())
        t = parts.settings.triton
        detector_ok = models[t.detector_model]["ready"] and models[t.pipeline_model]["ready"]
        analytics_ok = models[t.multitask_model]["ready"]
        services_ = {"face_detector": detector_ok, "face_analytics": analytics_ok, "database": db_ok}
        up = sum(services_.values())
        status = "healthy" if up == 3 else ("unhealthy" if up == 0 else "degraded")
        body = HealthResponse(status=status, services=services_, models=models,
                              replicas=_versions(replicas), version_skew=_skew(replicas),
                              gallery=await _gallery(parts)).model_dump()
        self.body, self.at = (health_status(status), body), time.monotonic()
        return self.body


@router.get("/health", response_model=HealthResponse, summary="Health of the service and its parts",
            responses={503: {"model": HealthResponse}})
async def health(request: Request, parts: ServicesDep):
    state = request.app.state
    if getattr(state, "health_cache", None) is None:
        state.health_cache = HealthCache(parts.settings.server.health_cache_s)
    code, body = await state.health_cache.get(parts)
    return JSONResponse(body, status_code=code)


async def _gallery(s: Services) -> dict:
    """The face_multitask version the gallery is in, and whether identity runs: `paused` while
    that version is not served or the gallery is not in one version (503 gallery_reembedding,
    until the reembed job has run; docs/kubernetes.md)."""
    try:
        version = s.identity.gallery_version
    except GalleryReembedding:
        return {"model_version": None, "identity": "paused"}
    if version is None:
        return {"model_version": None, "identity": "active"}
    return {"model_version": version, "identity": "active" if await s.inference.version_ready(version) else "paused"}


def _versions(replicas: dict[str, dict[str, dict]]) -> dict[str, dict[str, str | None]]:
    return {addr: {name: (m["mlflow_version"] or m["version"]) if m["ready"] else None
                   for name, m in models.items()}
            for addr, models in replicas.items()}


def _skew(replicas: dict[str, dict[str, dict]]) -> bool:
    served = _versions(replicas).values()
    return any(len({v[name] for v in served}) > 1 for name in next(iter(served), {}))
