"""GET /stats: counts computed by the database."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Query

from api.repository import utcnow
from api.deps import RepositoryDep
from api.schemas import DetectionBucket, DetectionSeries, StatsResponse

router = APIRouter()


@router.get("/stats", response_model=StatsResponse, summary="Statistics about stored faces")
async def stats(repo: RepositoryDep):
    now = utcnow()
    body = await repo.stats(since=now - dt.timedelta(hours=24))
    return StatsResponse(**body, last_updated=now)


WINDOWS = {"24h": ("hour", dt.timedelta(hours=1), 24), "30d": ("day", dt.timedelta(days=1), 30)}


@router.get("/stats/detections", response_model=DetectionSeries,
            summary="Detections per hour over the last 24 h, or per day over the last 30 days")
async def detections(repo: RepositoryDep, window: str = Query("24h", pattern="^(24h|30d)$")):
    bucket, step, n = WINDOWS[window]
    now = utcnow()
    first = now.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        first = first.replace(hour=0)
    first -= step * (n - 1)
    counts = await repo.detections_per_bucket(first, bucket)
    starts = [first + step * i for i in range(n)]
    return DetectionSeries(window=window, bucket=bucket, buckets=[
        DetectionBucket(start=s, count=counts.get(s.strftime("%Y-%m-%d %H:%M:%S"), 0)) for s in starts])
