"""GET /health: Triton model readiness and the database; 503 unless healthy."""

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
    body = HealthResponse(status=status, services=services_, models=models).model_dump()
    return JSONResponse(body, status_code=200 if status == "healthy" else 503)
