"""/analyze extras (include=), the face quality gate and per-request settings, through the real
Triton and models, on SQLite and MariaDB."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from core.settings import QualitySettings
from tests.integration.conftest import api_settings, running_api

pytestmark = pytest.mark.triton

BIDEN = "verification/images/Joe_Biden/biden.jpg"
GROUP = "detection/images/friends_t1.jpg"
WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"
CONTRACT_FACE = {"bbox", "confidence", "age", "gender", "gender_confidence", "identity", "person_id",
                 "person_name", "similarity"}


def photo(shared_data, rel: str):
    return {"file": ((shared_data / rel).name, (shared_data / rel).read_bytes(), "image/jpeg")}


def blurred(shared_data, rel: str, sigma: float = 12) -> dict:
    img = cv2.imread(str(shared_data / rel))
    ok, buf = cv2.imencode(".jpg", cv2.GaussianBlur(img, (0, 0), sigma))
    return {"file": ("blurred.jpg", buf.tobytes(), "image/jpeg")}


async def test_default_response_has_only_the_contract_fields_and_include_adds_the_extras(api, shared_data):
    plain = (await api.post("/analyze", files=photo(shared_data, BIDEN))).json()
    assert set(plain) == {"success", "faces", "message", "image"}
    assert set(plain["faces"][0]) == CONTRACT_FACE

    r = await api.post("/analyze", params={"include": "landmarks, embedding,crop,quality"},
                       files=photo(shared_data, BIDEN))
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    assert set(face) == CONTRACT_FACE | {"landmarks", "embedding", "crop", "quality"}
    assert face["bbox"] == plain["faces"][0]["bbox"]
    b = face["bbox"]
    lmk = np.array(face["landmarks"])
    assert lmk.shape == (5, 2)
    assert ((lmk[:, 0] > b["x"]) & (lmk[:, 0] < b["x"] + b["width"])).all()
    assert ((lmk[:, 1] > b["y"]) & (lmk[:, 1] < b["y"] + b["height"])).all()
    assert lmk[0, 0] < lmk[1, 0] and lmk[2, 1] < lmk[3, 1]  # eye L left of eye R, nose above the mouth
    emb = np.array(face["embedding"])
    assert emb.shape == (128,) and np.linalg.norm(emb) == pytest.approx(1, abs=1e-3)
    crop = cv2.imdecode(np.frombuffer(base64.b64decode(face["crop"]), np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (144, 144, 3)
    q = face["quality"]
    assert q["passed"] is True and q["reason"] is None and 0.5 < q["overall"] <= 1
    assert q["face_size"] == min(b["width"], b["height"]) or abs(q["face_size"] - min(b["width"], b["height"])) <= 1
    assert abs(q["yaw"]) < 30 and abs(q["pitch"]) < 30 and q["detection_score"] == face["confidence"]

    # the embedding is the one the service matches with: it finds the same person again
    again = (await api.post("/analyze", params={"include": "embedding"}, files=photo(shared_data, BIDEN))).json()
    assert float(np.dot(again["faces"][0]["embedding"], emb)) > 0.99

    r = await api.post("/analyze", params={"include": "landmarks,iris"}, files=photo(shared_data, BIDEN))
    assert r.status_code == 422 and r.json()["error"] == "invalid_field" and "iris" in r.json()["message"]


async def test_per_request_settings_apply_and_are_bounded(api, shared_data):
    everyone = (await api.post("/analyze", params={"include": "quality"}, files=photo(shared_data, GROUP))).json()
    n = len(everyone["faces"])
    assert n == 6
    two = (await api.post("/analyze", params={"max_faces": 2}, files=photo(shared_data, GROUP))).json()
    sizes = sorted((f["bbox"]["width"] * f["bbox"]["height"] for f in everyone["faces"]), reverse=True)
    assert [f["bbox"]["width"] * f["bbox"]["height"] for f in two["faces"]] == sizes[:2]
    big = (await api.post("/analyze", params={"min_face_size": 100}, files=photo(shared_data, GROUP))).json()
    expected = sum(1 for f in everyone["faces"] if max(f["bbox"]["width"], f["bbox"]["height"]) >= 100)
    assert 0 < len(big["faces"]) < n and abs(len(big["faces"]) - expected) <= 1
    cut = sorted(f["confidence"] for f in everyone["faces"])[n // 2]
    sure = (await api.post("/analyze", params={"min_confidence": cut}, files=photo(shared_data, GROUP))).json()
    assert sure["faces"] and all(f["confidence"] >= cut for f in sure["faces"]) and len(sure["faces"]) <= n

    for params in ({"threshold": 0.1}, {"threshold": 0.99}, {"min_face_size": -1}, {"min_face_size": 10**6},
                   {"max_faces": 0}, {"max_faces": 100000}, {"min_confidence": 1.5}, {"threshold": "high"}):
        r = await api.post("/analyze", params=params, files=photo(shared_data, BIDEN))
        assert r.status_code == 422, (params, r.text)
        assert r.json()["success"] is False and r.json()["error"] in ("invalid_field", "validation_error")


async def test_small_faces_false_is_one_pass_with_the_letterbox_reach(api, shared_data):
    """small_faces=false: the faces of a 1080p photo the 480 px letterbox can see (150 px: 37 px
    there) are found, its 28 px faces (7 px there) are not; by default all are (the 37 px faces
    are near enough the letterbox's floor to send the photo to the second phase)."""
    from export import group_photos, metrics

    rng = np.random.default_rng(17)
    sources, backgrounds = group_photos.load_sources(shared_data), group_photos.load_backgrounds(shared_data)
    made = group_photos.scattered(sources, backgrounds, 1920, 1080, [28, 150], 12, rng, "two_sizes")
    big = made.sizes >= 100
    assert big.any() and (~big).any()
    upload = {"file": ("two_sizes.jpg", made.jpeg, "image/jpeg")}

    def found(body):
        return [[f["bbox"]["x"], f["bbox"]["y"], f["bbox"]["x"] + f["bbox"]["width"],
                 f["bbox"]["y"] + f["bbox"]["height"]] for f in body["faces"]]

    full = (await api.post("/analyze", params={"mode": "detect"}, files=upload)).json()
    fast = (await api.post("/analyze", params={"mode": "detect", "small_faces": "false"}, files=upload)).json()
    assert len(metrics.match_pairs(made.boxes.tolist(), found(full))) >= 0.9 * len(made.boxes)
    assert len(metrics.match_pairs(made.boxes[big].tolist(), found(fast))) == int(big.sum())
    assert len(fast["faces"]) == int(big.sum())
    r = await api.post("/analyze", params={"small_faces": "maybe"}, files=upload)
    assert r.status_code == 422, r.text


async def test_a_per_request_threshold_decides_the_match(api, shared_data):
    r = await api.post("/register", files=photo(shared_data, WOMAN.format(0)), data={"person_name": "Model"})
    assert r.status_code == 200, r.text
    loose = (await api.post("/analyze", params={"threshold": 0.3}, files=photo(shared_data, WOMAN.format(218)))).json()
    face = loose["faces"][0]
    assert face["identity"] == "known" and face["similarity"] < 0.95
    strict = (await api.post("/analyze", params={"threshold": 0.95}, files=photo(shared_data, WOMAN.format(218)))).json()
    assert strict["faces"][0]["identity"] == "unknown"


async def test_quality_gate_refuses_poor_registrations_and_remembers_no_poor_unknowns(api, shared_data):
    r = await api.post("/register", files=blurred(shared_data, BIDEN), data={"person_name": "Blurry"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False and body["error"] == "face_blurry" and "quality" in body["message"]

    r = await api.post("/analyze", files=blurred(shared_data, BIDEN))
    assert r.status_code == 200
    face = r.json()["faces"][0]
    assert face["person_id"] is None and face["identity"] == "unknown"
    assert face["quality"]["passed"] is False and face["quality"]["reason"] == "sharpness"
    stats = (await api.get("/stats")).json()
    assert stats["unknown_faces"] == 0 and stats["total_detections"] == 0

    # a sharp photo of the same face is remembered as usual
    sharp = (await api.post("/analyze", files=photo(shared_data, BIDEN))).json()["faces"][0]
    assert sharp["person_id"].startswith("unknown_") and "quality" not in sharp
    assert (await api.get("/stats")).json()["unknown_faces"] == 1


async def test_the_gate_is_configurable(triton_settings, tmp_path, shared_data):
    off = api_settings(triton_settings, tmp_path, "sqlite",
                       quality=QualitySettings(min_score=0, register_min_score=0))
    async with running_api(off) as api:
        face = (await api.post("/analyze", files=blurred(shared_data, BIDEN))).json()["faces"][0]
        assert face["person_id"].startswith("unknown_") and "quality" not in face
        r = await api.post("/register", files=blurred(shared_data, BIDEN), data={"person_name": "Blurry"})
        assert r.status_code == 200, r.text
