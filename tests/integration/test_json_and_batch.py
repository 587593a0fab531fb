"""application/json input on /analyze and /register, and POST /analyze/batch, through the real
Triton and models, on SQLite and MariaDB."""

from __future__ import annotations

import base64

import pytest

from core.settings import RequestLimitSettings
from tests.integration.conftest import api_settings, running_api

pytestmark = pytest.mark.triton

BIDEN = "verification/images/Joe_Biden/biden.jpg"
GROUP = "detection/images/friends_t1.jpg"
COFFEE = "no_face/images/coffee.png"
WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"


def b64(shared_data, rel: str) -> str:
    return base64.b64encode((shared_data / rel).read_bytes()).decode()


async def test_json_base64_gives_the_same_answer_as_multipart(api, shared_data):
    multipart = (await api.post("/analyze", files={"file": ("g.jpg", (shared_data / GROUP).read_bytes(), "image/jpeg")})).json()
    r = await api.post("/analyze", json={"image": b64(shared_data, GROUP)}, params={"include": "quality"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [f["bbox"] for f in body["faces"]] == [f["bbox"] for f in multipart["faces"]]
    # the same people: the JSON request matched the unknowns the multipart one created
    assert [f["person_id"] for f in body["faces"]] == [f["person_id"] for f in multipart["faces"]]
    data_url = "data:image/jpeg;base64," + b64(shared_data, BIDEN)
    assert len((await api.post("/analyze", json={"image": data_url})).json()["faces"]) == 1

    r = await api.post("/register", json={"image": b64(shared_data, WOMAN.format(0)), "person_name": "Json Model"})
    assert r.status_code == 200, r.text
    known = r.json()["person_id"]
    face = (await api.post("/analyze", json={"image": b64(shared_data, WOMAN.format(218))})).json()["faces"][0]
    assert face["person_id"] == known and face["person_name"] == "Json Model"


@pytest.mark.parametrize("body, status, code", [
    ({"image": "not base64!!"}, 400, "invalid_image"),
    ({"image": base64.b64encode(b"plain text, not an image").decode()}, 415, "unsupported_media_type"),
    ({"image": 42}, 422, "invalid_field"),
    ({"picture": "abc"}, 422, "invalid_field"),
    (["a list"], 422, "invalid_field"),
])
async def test_bad_json_bodies_get_clear_errors(api, body, status, code):
    r = await api.post("/analyze", json=body)
    assert r.status_code == status, r.text
    assert r.json() == {"success": False, "error": code, "message": r.json()["message"]}


async def test_register_json_needs_a_name_and_an_image(api, shared_data):
    r = await api.post("/register", json={"image": b64(shared_data, BIDEN)})
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    r = await api.post("/register", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_field"
    r = await api.post("/register", content=b"raw", headers={"content-type": "text/plain"})
    assert r.status_code in (415, 422)
    assert (await api.get("/stats")).json()["known_faces"] == 0


async def test_batch_returns_one_result_per_image_in_order(api, shared_data):
    names = [BIDEN, COFFEE, GROUP, WOMAN.format(0)]
    files = [("files", (n.rsplit("/", 1)[1], (shared_data / n).read_bytes(), "image/jpeg")) for n in names]
    files.insert(2, ("files", ("bad.jpg", b"this is not an image", "image/jpeg")))
    r = await api.post("/analyze/batch", files=files, params={"include": "landmarks"})
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert body["success"] is True and len(results) == 5 and body["message"] == "Analyzed 4 of 5 image(s)"
    assert [len(x.get("faces", [])) for x in results] == [1, 0, 0, 6, 1]
    assert results[2] == {"success": False, "error": "unsupported_media_type", "message": results[2]["message"]}
    assert all("landmarks" in f for x in results if x["success"] for f in x["faces"])

    # each photo is what /analyze alone says, and identities carry across the batch and after it
    single = (await api.post("/analyze", files={"file": ("b.jpg", (shared_data / BIDEN).read_bytes())})).json()
    assert single["faces"][0]["person_id"] == results[0]["faces"][0]["person_id"]
    assert single["faces"][0]["bbox"] == results[0]["faces"][0]["bbox"]
    stats = (await api.get("/stats")).json()
    assert stats["total_detections"] == 1 + 6 + 1 + 1

    r = await api.post("/analyze/batch", json={"images": [b64(shared_data, BIDEN), "@@", b64(shared_data, COFFEE)]})
    assert r.status_code == 200, r.text
    out = r.json()["results"]
    assert [x["success"] for x in out] == [True, False, True] and out[1]["error"] == "invalid_image"
    assert out[0]["faces"][0]["person_id"] == single["faces"][0]["person_id"]


async def test_batch_limits(triton_settings, tmp_path, shared_data):
    settings = api_settings(triton_settings, tmp_path, "sqlite", limits=RequestLimitSettings(batch_max_images=2))
    async with running_api(settings) as api:
        image = b64(shared_data, COFFEE)
        r = await api.post("/analyze/batch", json={"images": [image] * 3})
        assert r.status_code == 422 and "at most 2" in r.json()["message"]
        for body in ({"images": []}, {"images": "x"}, {}):
            r = await api.post("/analyze/batch", json=body)
            assert r.status_code == 422 and r.json()["error"] == "invalid_field"
        r = await api.post("/analyze/batch", json={"images": [image, image]}, params={"threshold": 7})
        assert r.status_code == 422
        r = await api.post("/analyze/batch", json={"images": [image, image]})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
