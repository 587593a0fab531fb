"""Admission control counts a batch as the photos it carries, against the real Triton.

A worker with 4 slots and no waiting room: a batch of two slow photos (17 MP, faces down to
12 px: seconds of detector work each) holds 2 slots, seen in /metrics; meanwhile a batch of 3
does not fit and gets 503 overloaded with Retry-After, while a single /analyze and a batch of 2
do fit and are answered. Once the slow batch is done its slots are free again.
"""

from __future__ import annotations

import asyncio
import base64
import re

import pytest

from core.settings import AdmissionSettings
from tests.costly_inputs import many_windows_photo
from tests.integration.conftest import api_settings, running_api

pytestmark = pytest.mark.triton

GROUP = "detection/images/friends_t1.jpg"
SMALL = "verification/images/Joe_Biden/biden.jpg"


async def slots_in_use(api) -> float:
    text = (await api.get("/metrics")).text
    return float(re.search(r"^face_api_admission_slots_in_use (\S+)$", text, re.M).group(1))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_a_batch_takes_one_admission_slot_per_image(triton_settings, tmp_path, shared_data):
    slow = b64(many_windows_photo(shared_data / GROUP))
    small = (shared_data / SMALL).read_bytes()
    admission = AdmissionSettings(max_inflight=4, max_waiting=0, max_wait_s=30)
    triton = triton_settings.triton.model_copy(update={"timeout_s": 300})  # slow on a loaded machine
    settings = api_settings(triton_settings, tmp_path, "sqlite", admission=admission, triton=triton)
    async with running_api(settings) as api:
        base = await slots_in_use(api)
        busy = asyncio.create_task(api.post("/analyze/batch", params={"min_face_size": 12, "mode": "detect"},
                                            json={"images": [slow, slow]}, timeout=600))
        while await slots_in_use(api) < base + 2 and not busy.done():
            await asyncio.sleep(0.05)
        assert not busy.done(), "the slow batch ended before it could be watched"
        held = await slots_in_use(api) - base

        # 2 of 4 slots are taken: 3 more photos do not fit, 1 or 2 do
        refused = await api.post("/analyze/batch", json={"images": [b64(small)] * 3})
        still_busy = not busy.done()
        single = await api.post("/analyze", files={"file": ("a.jpg", small)}, params={"mode": "detect"})
        pair = await api.post("/analyze/batch", json={"images": [b64(small)] * 2}, params={"mode": "detect"})

        done = await busy
        after = await slots_in_use(api) - base
        again = await api.post("/analyze/batch", json={"images": [b64(small)] * 3}, params={"mode": "detect"})

    print(f"\nslow batch of 2 held {held:.0f} slots; batch of 3 meanwhile: {refused.status_code}; "
          f"single: {single.status_code}; batch of 2: {pair.status_code}; after: {after:.0f} held, "
          f"batch of 3: {again.status_code}")
    assert held == 2
    assert still_busy, "the slow batch ended before the batch of 3 was sent: nothing was tested"
    assert refused.status_code == 503 and refused.json()["error"] == "overloaded"
    assert refused.headers["Retry-After"] == "1"
    assert single.status_code == 200 and pair.status_code == 200
    assert [x["success"] for x in pair.json()["results"]] == [True, True]
    assert done.status_code == 200 and all(x["success"] and x["faces"] for x in done.json()["results"])
    assert after == 0
    assert again.status_code == 200 and len(again.json()["results"]) == 3
