"""Retention purge, erasure, and nothing personal in the logs."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from api.maintenance import purge
from api.repository import utcnow
from tests.integration.conftest import api_settings, running_api

pytestmark = pytest.mark.triton

FACE = "verification/images/Joe_Biden/biden.jpg"


async def test_retention_purges_unknown_people_not_seen_for_n_days(triton_settings, tmp_path, shared_data, caplog):
    caplog.set_level(logging.DEBUG)
    settings = api_settings(triton_settings, tmp_path, "sqlite")
    data = (shared_data / FACE).read_bytes()
    async with running_api(settings) as api:
        old = (await api.post("/analyze", files={"file": ("a.jpg", data)})).json()["faces"][0]["person_id"]
        other = shared_data / "verification/images/Grace_Hopper/grace_hopper.jpg"
        recent = (await api.post("/analyze", files={"file": ("b.jpg", other.read_bytes())})).json()["faces"][0]
        async with api.app.state.services.repo.transaction() as tx:
            await tx.execute("UPDATE unknown_faces SET last_seen = %s WHERE person_id = %s",
                             (utcnow() - dt.timedelta(days=40), old))
        purged = await purge(settings, days=30)
        assert purged == [old]
        assert (await api.get(f"/persons/{old}")).status_code == 404
        assert (await api.get(f"/persons/{recent['person_id']}")).status_code == 200
        stats = (await api.get("/stats")).json()
        assert stats["unknown_faces"] == 1 and stats["total_detections"] == 1

        name = "Very Private Name"
        r = await api.post("/register", files={"file": ("c.jpg", data)}, data={"person_name": name})
        assert r.status_code == 200
    # even at DEBUG, neither names nor embedding bytes reach the logs (drivers log SQL parameters)
    assert name not in caplog.text and "embedding" not in caplog.text.lower()
