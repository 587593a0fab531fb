"""Every endpoint through the real Triton, the real models and real photos, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import re

import pytest
from PIL import Image

pytestmark = pytest.mark.triton

WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"


def photo(shared_data, rel: str) -> tuple[str, bytes, str]:
    path = shared_data / rel
    return path.name, path.read_bytes(), "image/jpeg"


async def analyze(api, shared_data, rel: str):
    r = await api.post("/analyze", files={"file": photo(shared_data, rel)})
    assert r.status_code == 200, r.text
    return r.json()


async def test_register_then_recognise_the_same_person_in_another_photo(api, shared_data):
    r = await api.post("/register", files={"file": photo(shared_data, WOMAN.format(0))},
                       data={"person_name": "  Wolfgang's Model  "})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert re.fullmatch(r"known_wolfgang_s_model_\d{10}", body["person_id"])
    assert body["message"] == "Successfully registered Wolfgang's Model"

    result = await analyze(api, shared_data, WOMAN.format(218))
    assert result["success"] is True and len(result["faces"]) == 1
    face = result["faces"][0]
    assert face["identity"] == "known"
    assert face["person_id"] == body["person_id"]
    assert face["person_name"] == "Wolfgang's Model"
    assert face["gender"] == "female" and 0.5 <= face["gender_confidence"] <= 1
    assert set(face["bbox"]) == {"x", "y", "width", "height"}

    # the same name again adds a sample instead of a second person
    r2 = await api.post("/register", files={"file": photo(shared_data, WOMAN.format(42))},
                        data={"person_name": "Wolfgang's Model"})
    assert r2.json()["person_id"] == body["person_id"] and r2.json()["samples"] == 2
    stats = (await api.get("/stats")).json()
    assert stats["known_faces"] == 1


async def test_unknown_person_keeps_the_same_id_and_count(api, shared_data):
    first = (await analyze(api, shared_data, WOMAN.format(0)))["faces"][0]
    assert first["identity"] == "unknown"
    assert re.fullmatch(r"unknown_\d{10}_\d{4}", first["person_id"])
    assert first["similarity"] is None
    second = (await analyze(api, shared_data, WOMAN.format(260)))["faces"][0]
    assert second["person_id"] == first["person_id"] and second["similarity"] > 0.363

    other = (await analyze(api, shared_data, "verification/images/Joe_Biden/biden.jpg"))["faces"][0]
    assert other["identity"] == "unknown" and other["person_id"] != first["person_id"]

    stats = (await api.get("/stats")).json()
    assert stats["unknown_faces"] == 2
    assert stats["total_detections"] == 3 and stats["recent_detections_24h"] == 3
    top = stats["top_unknown_faces"][0]
    assert top["person_id"] == first["person_id"] and top["detection_count"] == 2

    person = (await api.get(f"/persons/{first['person_id']}")).json()
    assert person["identity"] == "unknown" and person["detection_count"] == 2


async def test_registering_an_unknown_face_promotes_its_history(api, shared_data):
    unknown = (await analyze(api, shared_data, WOMAN.format(0)))["faces"][0]["person_id"]
    await analyze(api, shared_data, WOMAN.format(84))
    r = await api.post("/register", files={"file": photo(shared_data, WOMAN.format(134))},
                       data={"person_name": "Model"})
    body = r.json()
    assert body["promoted_unknown_id"] == unknown
    assert (await api.get(f"/persons/{unknown}")).status_code == 404
    known = (await api.get(f"/persons/{body['person_id']}")).json()
    assert known["identity"] == "known" and known["detection_count"] == 2
    stats = (await api.get("/stats")).json()
    assert stats["unknown_faces"] == 0 and stats["known_faces"] == 1 and stats["total_detections"] == 2


async def test_name_an_unknown_person_then_delete_erases_everything(api, shared_data):
    unknown = (await analyze(api, shared_data, "verification/images/Joe_Biden/biden.jpg"))["faces"][0]["person_id"]
    r = await api.patch(f"/persons/{unknown}", json={"person_name": "Joe Biden"})
    assert r.status_code == 200, r.text
    known = r.json()["person_id"]
    assert known.startswith("known_joe_biden_")
    again = (await analyze(api, shared_data, "detection/images/biden.jpg"))["faces"][0]
    assert again["person_id"] == known and again["person_name"] == "Joe Biden"
    page = (await api.get("/persons", params={"identity": "known"})).json()
    assert page["total"] == 1 and page["persons"][0]["detection_count"] == 2

    assert (await api.delete(f"/persons/{known}")).status_code == 200
    assert (await api.get(f"/persons/{known}")).status_code == 404
    stats = (await api.get("/stats")).json()
    assert stats["known_faces"] == 0 and stats["total_detections"] == 0
    assert (await api.delete(f"/persons/{known}")).status_code == 404
    # the person is gone from the gallery too: the next photo is a new unknown
    fresh = (await analyze(api, shared_data, "detection/images/biden.jpg"))["faces"][0]
    assert fresh["identity"] == "unknown"


async def test_concurrent_photos_of_one_new_face_create_one_unknown(api, shared_data):
    files = photo(shared_data, "verification/images/Joe_Biden/biden.jpg")
    results = await asyncio.gather(*(api.post("/analyze", files={"file": files}) for _ in range(50)))
    assert all(r.status_code == 200 for r in results), {r.text for r in results if r.status_code != 200}
    ids = {r.json()["faces"][0]["person_id"] for r in results}
    assert len(ids) == 1
    stats = (await api.get("/stats")).json()
    assert stats["unknown_faces"] == 1
    assert stats["top_unknown_faces"][0]["detection_count"] == 50
    assert stats["total_detections"] == 50


async def test_concurrent_registers_of_one_name_create_one_person(api, shared_data):
    files = photo(shared_data, WOMAN.format(0))
    results = await asyncio.gather(*(api.post("/register", files={"file": files},
                                              data={"person_name": "Same Name"}) for _ in range(6)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len({r.json()["person_id"] for r in results}) == 1
    assert (await api.get("/stats")).json()["known_faces"] == 1


async def test_group_and_empty_photos(api, shared_data):
    group = await analyze(api, shared_data, "detection/images/friends_t1.jpg")
    assert len(group["faces"]) == 6
    assert len({f["person_id"] for f in group["faces"]}) == 6
    empty = await analyze(api, shared_data, "no_face/images/coffee.png")
    width, height = Image.open(shared_data / "no_face/images/coffee.png").size
    assert empty == {"success": True, "faces": [], "message": "No faces detected in the image",
                     "image": {"width": width, "height": height}}
    r = await api.post("/register", files={"file": photo(shared_data, "no_face/images/coffee.png")},
                       data={"person_name": "Nobody"})
    assert r.status_code == 400 and r.json()["error"] == "no_face"
    r = await api.post("/register", files={"file": photo(shared_data, "detection/images/friends_t1.jpg")},
                       data={"person_name": "Crowd"})
    assert r.status_code == 400 and "found 6 faces" in r.json()["message"]
    r = await api.post("/register", files={"file": photo(shared_data, "detection/images/friends_t1.jpg")},
                       data={"person_name": "Crowd", "largest_face": "true"})
    assert r.status_code == 200


async def test_bad_requests_get_clear_json_errors(api, shared_data):
    cases = [
        ({"file": ("a.jpg", b"", "image/jpeg")}, None, 400, "invalid_image"),
        ({"file": ("a.jpg", b"hello, this is text", "image/jpeg")}, None, 415, "unsupported_media_type"),
        ({"file": ("a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png")}, None, 400, "invalid_image"),
        ({}, None, 422, "validation_error"),
    ]
    for files, data, status, code in cases:
        r = await api.post("/analyze", files=files or None, data=data)
        assert r.status_code == status, (code, r.text)
        assert r.json()["success"] is False and r.json()["error"] == code
    r = await api.post("/register", files={"file": photo(shared_data, WOMAN.format(0))})
    assert r.status_code == 422
    r = await api.post("/register", files={"file": photo(shared_data, WOMAN.format(0))},
                       data={"person_name": "bad\x07name"})
    assert r.status_code == 422 and "control" in r.json()["message"]
    big = b"\xff\xd8\xff" + b"\x00" * (11 * 1024 * 1024)
    r = await api.post("/analyze", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413
    assert (await api.get("/stats")).json()["total_detections"] == 0


async def test_health_reports_parts_and_model_versions(api):
    r = await api.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["services"] == {"face_detector": True, "face_analytics": True, "database": True}
    assert body["models"]["face_multitask"]["mlflow_version"]
    metrics = (await api.get("/metrics")).text
    assert "face_api_requests_total" in metrics and "face_api_triton_seconds" in metrics
    assert "/analyze" in (await api.get("/openapi.json")).text


async def test_routes_take_their_settings_from_the_dependency(api, shared_data):
    """Routes state their needs as typed dependencies: a settings override reaches /verify's decision
    while Triton, the database and the identity service stay the real ones."""
    from api import deps
    from core.settings import MatchingSettings

    files = {"file1": photo(shared_data, WOMAN.format(0)), "file2": photo(shared_data, WOMAN.format(218))}
    served = (await api.post("/verify", files=files)).json()
    assert served["verified"] is True and served["threshold"] == api.app.state.services.settings.matching.threshold

    strict = served["similarity"] + 0.01  # just above this pair's similarity: the same faces no longer verify
    real = api.app.state.services.settings
    api.app.dependency_overrides[deps.app_settings] = lambda: real.model_copy(
        update={"matching": MatchingSettings(threshold=strict)})
    try:
        overridden = (await api.post("/verify", files=files)).json()
    finally:
        api.app.dependency_overrides.clear()
    assert overridden["similarity"] == served["similarity"]
    assert overridden["threshold"] == strict and overridden["verified"] is False
    assert (await api.post("/verify", files=files)).json()["verified"] is True
