"""GET /health: Triton model readiness and the database; 503 unless healthy.

With several Triton replicas (TRITON_GRPC_URL dns:///... or a list) it also lists the model
versions each replica serves and flags a skew: replicas serving different versions, as
while a publish goes round. A skew is reported, not counted as degraded: it is expected
for the seconds a publish takes (docs/kubernetes.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.routes.common import services
from api.schemas import HealthResponse

router = APIRouter()


@router.get("/health", response_model=HealthResponse, summary="Health of the service and its parts",
            responses={503: {"model": HealthResponse}})
async def health(request: Request):
    s = services(request)
    models = await s.inference.model_status()
    db_ok = await s.repo.ping()
    t = s.settings.triton
    detector_ok = models[t.detector_model]["ready"] and models[t.pipeline_model]["ready"]
    analytics_ok = models[t.multitask_model]["ready"]
    services_ = {"face_detector": detector_ok, "face_analytics": analytics_ok, "database": db_ok}
    up = sum(services_.values())
    status = "healthy" if up == 3 else ("unhealthy" if up == 0 else "degraded")
    replicas = await s.inference.replica_status()
    body = HealthResponse(status=status, services=services_, models=models,
                          replicas=_versions(replicas), version_skew=_skew(replicas)).model_dump()
    return JSONResponse(body, status_code=200 if status == "healthy" else 503)


def _versions(replicas: dict[str, dict[str, dict]]) -> dict[str, dict[str, str | None]]:
    return {addr: {name: (m["mlflow_version"] or m["version"]) if m["ready"] else None
                   for name, m in models.items()}
            for addr, models in replicas.items()}


def _skew(replicas: dict[str, dict[str, dict]]) -> bool:
    served = _versions(replicas).values()
    return any(len({v[name] for v in served}) > 1 for name in next(iter(served), {}))
