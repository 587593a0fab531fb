"""candidates=k on /analyze and /analyze/batch: the k best gallery matches per face, through the
real Triton and models, on SQLite and MariaDB."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.triton

PEOPLE = {"Joe Biden": "verification/images/Joe_Biden/biden.jpg",
          "Grace Hopper": "verification/images/Grace_Hopper/grace_hopper.jpg",
          "Tom Hanks": "verification/images/Tom_Hanks/tom_hanks.png",
          "Dame Man": "verification/images/damefaces_man1/dame_man1.jpg"}
WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"
CONTRACT_FACE = {"bbox", "confidence", "age", "gender", "gender_confidence", "identity", "person_id",
                 "person_name", "similarity"}


def photo(shared_data, rel: str, field: str = "file"):
    path = shared_data / rel
    return {field: (path.name, path.read_bytes(), "image/png" if path.suffix == ".png" else "image/jpeg")}


async def test_candidates_are_the_k_nearest_people_best_first(api, shared_data):
    ids = {}
    for name, rel in PEOPLE.items():
        r = await api.post("/register", data={"person_name": name}, files=photo(shared_data, rel))
        assert r.status_code == 200, r.text
        ids[r.json()["person_id"]] = name
    # an unknown person too: the woman of the video, remembered by a first /analyze
    first = (await api.post("/analyze", files=photo(shared_data, WOMAN.format(0)))).json()["faces"][0]
    assert first["identity"] == "unknown"

    # the templates, to rank by hand (include=embedding is the vector the service matches with)
    embs = {}
    for pid, name in ids.items():
        f = (await api.post("/analyze", params={"include": "embedding", "mode": "search"},
                            files=photo(shared_data, PEOPLE[name]))).json()["faces"][0]
        assert f["person_id"] == pid
        embs[pid] = np.array(f["embedding"])

    r = await api.post("/analyze", params={"candidates": 3, "include": "embedding"},
                       files=photo(shared_data, PEOPLE["Joe Biden"]))
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    assert set(face) == CONTRACT_FACE | {"candidates", "embedding"}
    cands = face["candidates"]
    assert len(cands) == 3
    assert cands[0]["person_id"] == face["person_id"] and cands[0]["person_name"] == "Joe Biden"
    assert cands[0]["identity"] == "known" and cands[0]["similarity"] == pytest.approx(face["similarity"], abs=1e-4)
    sims = [c["similarity"] for c in cands]
    assert sims == sorted(sims, reverse=True) and sims[1] < 0.363  # the others are below the threshold
    q = np.array(face["embedding"])
    for c in cands:
        if c["identity"] == "known":
            assert c["person_name"] == ids[c["person_id"]]
            assert c["similarity"] == pytest.approx(float(q @ embs[c["person_id"]]), abs=2e-3)
        else:
            assert c["person_id"] == first["person_id"] and c["person_name"] is None

    # more than there are people: everyone (4 known + 1 unknown), in order; mode=search the same
    every = (await api.post("/analyze", params={"candidates": 10, "mode": "search"},
                            files=photo(shared_data, WOMAN.format(42)))).json()["faces"][0]
    assert len(every["candidates"]) == 5
    assert every["candidates"][0]["person_id"] == first["person_id"] == every["person_id"]
    assert len({c["person_id"] for c in every["candidates"]}) == 5

    # a new face: it becomes a new unknown person, its candidates are the gallery before it
    new = (await api.post("/analyze", params={"candidates": 2},
                          files=photo(shared_data, "verification/images/damefaces_girl1/dame_girl1.jpg"))).json()
    f = new["faces"][0]
    assert f["identity"] == "unknown" and f["similarity"] is None
    assert len(f["candidates"]) == 2 and f["person_id"] not in {c["person_id"] for c in f["candidates"]}
    assert all(c["similarity"] < 0.363 for c in f["candidates"])

    # the default response is unchanged: no candidates key
    plain = (await api.post("/analyze", files=photo(shared_data, PEOPLE["Grace Hopper"]))).json()["faces"][0]
    assert set(plain) == CONTRACT_FACE

    # batches take the option per photo
    files = [("files", v) for v in (photo(shared_data, PEOPLE["Tom Hanks"])["file"],
                                    photo(shared_data, PEOPLE["Dame Man"])["file"])]
    batch = (await api.post("/analyze/batch", params={"candidates": 1}, files=files)).json()
    assert [res["faces"][0]["candidates"][0]["person_name"] for res in batch["results"]] == ["Tom Hanks", "Dame Man"]


@pytest.mark.parametrize("value", ["0", "-1", "11", "abc", "2.5"])
async def test_candidates_out_of_bounds_is_422(api, shared_data, value):
    r = await api.post("/analyze", params={"candidates": value}, files=photo(shared_data, PEOPLE["Joe Biden"]))
    assert r.status_code == 422, r.text
    assert r.json()["success"] is False and "candidates" in r.json()["message"]
    stats = (await api.get("/stats")).json()
    assert stats["unknown_faces"] == 0 and stats["total_detections"] == 0  # refused before any write


async def test_candidates_need_matching(api, shared_data):
    for path, files in (("/analyze", photo(shared_data, PEOPLE["Joe Biden"])),
                        ("/analyze/batch", photo(shared_data, PEOPLE["Joe Biden"], "files"))):
        r = await api.post(path, params={"candidates": 2, "mode": "detect"}, files=files)
        assert r.status_code == 422 and r.json()["error"] == "invalid_field", r.text
