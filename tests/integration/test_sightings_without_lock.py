"""Sightings of people already in the gallery are written without the database-wide lock
(api.identity): each matched person's row is locked instead, and every merge or deletion locks
the rows it changes. Two app instances on one database: one keeps sighting a person while the
other merges that person away and then deletes the survivor. Whatever the interleaving, no
sighting may point at a person who no longer exists, and each unknown person's count must equal
its sightings (without the row locks a sighting committed after a merge or a deletion would be
orphaned, or its count lost). Real photos, the real Triton; SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.integration.conftest import api_settings, mysql_database, running_api

pytestmark = pytest.mark.triton

BIDEN = "verification/images/Joe_Biden/biden.jpg"
WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"


async def _consistent(api) -> None:
    async with api.app.state.services.repo.transaction() as tx:
        orphans = await tx.fetchall(
            "SELECT d.person_id FROM face_detections d WHERE NOT EXISTS (SELECT 1 FROM unknown_faces u"
            " WHERE u.person_id = d.person_id) AND NOT EXISTS (SELECT 1 FROM known_faces k"
            " WHERE k.person_id = d.person_id)")
        counts = await tx.fetchall(
            "SELECT u.person_id, u.detection_count, (SELECT COUNT(*) FROM face_detections d"
            " WHERE d.person_id = u.person_id) FROM unknown_faces u")
    assert orphans == []
    assert all(int(c) == int(n) for _, c, n in counts), counts


async def test_sightings_race_merges_and_deletions(triton_settings, tmp_path, shared_data, backend):
    photo = lambda rel: (shared_data / rel).read_bytes()  # noqa: E731
    with contextlib.ExitStack() as stack:
        name = stack.enter_context(mysql_database()) if backend == "mysql" else None
        settings = api_settings(triton_settings, tmp_path, backend, name)
        async with running_api(settings) as a, running_api(settings) as b:
            async def analyze(api, rel):
                r = await api.post("/analyze", files={"file": ("p.jpg", photo(rel))})
                assert r.status_code == 200, r.text
                return r.json()["faces"][0]["person_id"]

            biden = await analyze(a, BIDEN)
            woman = await analyze(b, WOMAN.format(0))
            assert await analyze(a, BIDEN) == biden  # from here on a's sightings take the unlocked path

            stop = asyncio.Event()
            seen = []

            async def sighting_loop():
                while not stop.is_set():
                    seen.append(await analyze(a, BIDEN))

            loops = [asyncio.create_task(sighting_loop()) for _ in range(3)]
            try:
                while len(seen) < 3:
                    await asyncio.sleep(0.05)
                r = await b.post(f"/persons/{biden}/merge", json={"into": woman})
                assert r.status_code == 200, r.text
                mark = len(seen)
                while len(seen) < mark + 3:
                    await asyncio.sleep(0.05)
                for pid in {p for p in seen[mark:] if p != biden} | {woman}:
                    r = await b.delete(f"/persons/{pid}")
                    assert r.status_code in (200, 404), r.text
                mark = len(seen)
                while len(seen) < mark + 3:
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.gather(*loops)
            assert biden in seen and len(set(seen)) >= 2  # the person changed under the loop
            await _consistent(a)
