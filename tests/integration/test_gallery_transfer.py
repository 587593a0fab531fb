"""Gallery export/import (python -m api.maintenance export-gallery | import-gallery): a gallery built
through the API on SQLite moves to MariaDB and back, and its people are recognised there under the
same ids; embeddings of another model version are refused unless re-embedded through the real Triton."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from api import gallery_transfer as gt
from core.settings import PROJECT_ROOT
from tests.integration.conftest import api_settings, mysql_database, running_api

pytestmark = [pytest.mark.triton, pytest.mark.mysql]

BIDEN = "verification/images/Joe_Biden/biden.jpg"
GRACE = "verification/images/Grace_Hopper/grace_hopper.jpg"
WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"
GIRL = "verification/images/damefaces_girl1/dame_girl1.jpg"


def photo(shared_data, rel: str):
    return {"file": ("p.jpg", (shared_data / rel).read_bytes(), "image/jpeg")}


def cli(settings, *args) -> subprocess.CompletedProcess:
    """The maintenance command as an operator runs it, configured by the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "FA_", "TRITON_"))}
    env.update(TRITON_GRPC_URL=settings.triton.grpc_url, FA_DB_SQLITE_PATH=str(settings.database.sqlite_path))
    if settings.mysql.host:
        env.update(MYSQL_HOST=settings.mysql.host, MYSQL_PORT=str(settings.mysql.port), MYSQL_USER=settings.mysql.user,
                   MYSQL_PASSWORD=settings.mysql.password, MYSQL_DATABASE=settings.mysql.database)
    return subprocess.run([sys.executable, "-m", "api.maintenance", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


async def build_gallery(settings, shared_data) -> dict:
    async with running_api(settings) as api:
        ids = {}
        for name, rel in (("Joe Biden", BIDEN), ("Grace Hopper", GRACE), ("Woman", WOMAN.format(0)),
                          ("Woman", WOMAN.format(42))):
            r = await api.post("/register", data={"person_name": name}, files=photo(shared_data, rel))
            assert r.status_code == 200, r.text
            ids[name] = r.json()["person_id"]
        for _ in range(2):
            girl = (await api.post("/analyze", files=photo(shared_data, GIRL))).json()["faces"][0]
        ids["girl"] = girl["person_id"]
        assert girl["identity"] == "unknown"
    return ids


async def assert_recognised(settings, shared_data, ids: dict, girl_count: int) -> None:
    async with running_api(settings) as api:
        for name, rel in (("Joe Biden", BIDEN), ("Grace Hopper", GRACE), ("Woman", WOMAN.format(84))):
            f = (await api.post("/analyze", files=photo(shared_data, rel))).json()["faces"][0]
            assert (f["identity"], f["person_id"], f["person_name"]) == ("known", ids[name], name)
            assert f["similarity"] > 0.363
        assert len((await api.get(f"/persons/{ids['Woman']}/samples")).json()["samples"]) == 2
        crop = await api.get(f"/persons/{ids['Woman']}/crop")
        assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"
        f = (await api.post("/analyze", files=photo(shared_data, GIRL))).json()["faces"][0]
        assert (f["identity"], f["person_id"]) == ("unknown", ids["girl"])
        person = (await api.get(f"/persons/{ids['girl']}")).json()
        assert person["detection_count"] == girl_count + 1  # the old sightings count, plus this one
        stats = (await api.get("/stats")).json()
        assert (stats["known_faces"], stats["unknown_faces"]) == (3, 1)


async def test_gallery_moves_from_sqlite_to_mariadb_and_back(triton_settings, tmp_path, shared_data):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    lite = api_settings(triton_settings, tmp_path / "a", "sqlite")
    back = api_settings(triton_settings, tmp_path / "b", "sqlite")
    ids = await build_gallery(lite, shared_data)
    first = tmp_path / "from_sqlite.tar"
    out = cli(lite, "export-gallery", str(first))
    assert out.returncode == 0, out.stderr
    assert "exported 3 known and 1 unknown people, 5 embeddings" in out.stdout
    assert "Joe Biden" not in out.stdout + out.stderr  # names are never printed
    manifest, people, vectors, crops = gt.read_file(first)
    assert vectors.shape == (5, 128) and len(crops) == 5 and len(people) == 4
    assert list(manifest["embedding_models"]) == [f"face_multitask:{people[0]['samples'][0]['model_version']}"]

    with mysql_database() as name:
        maria = api_settings(triton_settings, tmp_path, "mysql", name)
        out = cli(maria, "import-gallery", str(first))
        assert out.returncode == 0, out.stderr
        assert "imported 4 people (0 embeddings re-embedded)" in out.stdout
        await assert_recognised(maria, shared_data, ids, girl_count=2)
        again = await gt.import_gallery(maria, first, progress=lambda m: None)  # idempotent
        assert again.imported == [] and len(again.skipped_existing) == 4

        second = tmp_path / "from_mariadb.tar"
        await gt.export_gallery(maria, second)
    # and back to SQLite, where Joe Biden was registered meanwhile under an id of his own:
    # that entry is skipped, nothing is overwritten
    async with running_api(back) as api:
        local = (await api.post("/register", data={"person_name": "Joe Biden"},
                                files=photo(shared_data, BIDEN))).json()["person_id"]
    report = await gt.import_gallery(back, second, progress=lambda m: None)
    assert report.skipped_name_taken == [ids["Joe Biden"]] and len(report.imported) == 3
    await assert_recognised(back, shared_data, {**ids, "Joe Biden": local}, girl_count=3)


def with_model_version(src, dst, version: str) -> None:
    """A copy of an export whose embeddings claim another face_multitask version."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name == "people.json":
                people = json.loads(data)
                for p in people:
                    for s in p["samples"]:
                        s["model_version"] = version
                data = json.dumps(people).encode()
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data))


async def test_import_refuses_another_model_version_unless_reembedding(triton_settings, tmp_path, shared_data):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    lite = api_settings(triton_settings, tmp_path / "a", "sqlite")
    ids = await build_gallery(lite, shared_data)
    exported = tmp_path / "g.tar"
    await gt.export_gallery(lite, exported)
    old = tmp_path / "old.tar"
    with_model_version(exported, old, "0")
    _, _, original, _ = gt.read_file(exported)

    with mysql_database() as name:
        maria = api_settings(triton_settings, tmp_path, "mysql", name)
        out = cli(maria, "import-gallery", str(old))
        assert out.returncode == 1 and "face_multitask v0" in out.stderr and "--reembed" in out.stderr
        async with running_api(maria) as api:
            stats = (await api.get("/stats")).json()
            assert (stats["known_faces"], stats["unknown_faces"]) == (0, 0)  # nothing written
        # a site that states its version without Triton: the file's own version is accepted
        with pytest.raises(gt.TransferError):
            await gt.import_gallery(maria, exported, model=("face_multitask", "0"), progress=lambda m: None)

        report = await gt.import_gallery(maria, old, reembed=True, progress=lambda m: None)
        assert report.reembedded == 5 and len(report.imported) == 4
        await assert_recognised(maria, shared_data, ids, girl_count=2)
        await gt.export_gallery(maria, tmp_path / "after.tar")
    manifest, _, fresh, _ = gt.read_file(tmp_path / "after.tar")
    assert "face_multitask:0" not in manifest["embedding_models"]
    # the same model re-embedded the crops: close to the vectors of the original canvases (the stored
    # crop is a JPEG of the canvas; 0.963-0.991 seen), far above any two people (<= 0.231)
    assert float(np.min(np.sum(fresh * original, axis=1))) > 0.9


async def test_unreadable_file_is_refused(triton_settings, tmp_path):
    bad = tmp_path / "x.tar"
    bad.write_bytes(b"not a tar file at all")
    with pytest.raises(gt.TransferError, match="cannot read"):
        await gt.import_gallery(api_settings(triton_settings, tmp_path, "sqlite"), bad, progress=lambda m: None)
