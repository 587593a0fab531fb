"""GET /stats: counts computed by the database."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request

from api.repository import utcnow
from api.routes.common import services
from api.schemas import StatsResponse

router = APIRouter()


@router.get("/stats", response_model=StatsResponse, summary="Statistics about stored faces")
async def stats(request: Request):
    now = utcnow()
    body = await services(request).repo.stats(since=now - dt.timedelta(hours=24))
    return StatsResponse(**body, last_updated=now)
