"""Bad and odd inputs: each gets its status and a clear message, and afterwards the service is
healthy and the database holds no partial rows."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from core.settings import SHARED_DATA
from tests.costly_inputs import encode, png_chunk
from tests.integration.conftest import api_settings, running_api

pytestmark = pytest.mark.triton

FACE = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f0000.jpg"


def png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """A few hundred bytes that claim 900 megapixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""))


def jpeg_claiming(w: int, h: int) -> bytes:
    """A JPEG whose frame header claims w x h."""
    real = encode(Image.new("RGB", (16, 16), "white"), "JPEG")
    i = real.index(b"\xff\xc0")
    return real[:i + 5] + struct.pack(">HH", h, w) + real[i + 9:]


def cases(face_bytes: bytes):
    rgb = Image.open(io.BytesIO(face_bytes)).convert("RGB")
    small = rgb.resize((320, 180))
    plain = Image.new("RGB", (200, 200), (120, 160, 200))
    a16 = Image.fromarray(np.asarray(small.convert("L"), np.uint16) * 257)  # 16-bit greyscale
    rgba = small.convert("RGBA")
    rgba.putalpha(128)
    yield "empty file", b"", 400, "empty"
    yield "plain text", b"hello world, not an image", 415, "not a supported image type"
    yield "html", b"<html><body>hi</body></html>", 415, "not a supported image type"
    yield "pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", 415, "not a supported image type"
    yield "zip", b"PK\x03\x04" + b"\x00" * 100, 415, "not a supported image type"
    yield "random bytes", bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), 415, "not a supported"
    yield "elf binary", b"\x7fELF" + b"\x00" * 64, 415, "not a supported"
    yield "jpeg magic only", b"\xff\xd8\xff", 400, "corrupt"
    yield "truncated jpeg (100 bytes)", face_bytes[:100], 400, "corrupt"
    yield "truncated jpeg (half)", face_bytes[: len(face_bytes) // 2], 400, "corrupt"
    yield "png signature only", b"\x89PNG\r\n\x1a\n", 400, "corrupt"
    yield "truncated png", encode(small, "PNG")[:200], 400, "corrupt"
    yield "gif header only", b"GIF89a", 400, "corrupt"
    yield "bmp header only", b"BM" + b"\x00" * 10, 400, "corrupt"
    yield "webp header only", b"RIFF\x00\x00\x00\x00WEBP", 400, "corrupt"
    yield "png bomb 30000x30000", png_bomb(), 400, "more than the limit"
    yield "jpeg claiming 60000x60000", jpeg_claiming(60000, 60000), 400, "more than the limit"
    yield "1x1 pixel", encode(Image.new("RGB", (1, 1)), "PNG"), 400, "smaller than"
    yield "10x10 pixels", encode(Image.new("RGB", (10, 10)), "PNG"), 400, "smaller than"
    yield "jpeg photo", face_bytes, 200, "1 face"
    yield "png photo", encode(small, "PNG"), 200, "1 face"
    yield "webp photo", encode(small, "WEBP", quality=90), 200, "1 face"
    yield "bmp photo", encode(small, "BMP"), 200, "1 face"
    yield "tiff photo", encode(small, "TIFF"), 200, "1 face"
    yield "gif photo (first frame)", encode(small.convert("P"), "GIF"), 200, "face"
    yield "greyscale jpeg", encode(small.convert("L"), "JPEG"), 200, "1 face"
    yield "16-bit greyscale png", encode(a16, "PNG"), 200, "1 face"
    yield "cmyk jpeg", encode(small.convert("CMYK"), "JPEG"), 200, "1 face"
    yield "rgba png, half transparent", encode(rgba, "PNG"), 200, "face"
    yield "palette png", encode(small.convert("P"), "PNG"), 200, "face"
    yield "no face", encode(plain, "PNG"), 200, "No faces"
    yield "huge aspect ratio 4000x20", encode(Image.new("RGB", (4000, 20)), "PNG"), 200, "No faces"
    yield "tiny 16x16", encode(Image.new("RGB", (16, 16)), "PNG"), 200, "No faces"
    yield "png sent as text/plain named .txt", encode(small, "PNG"), 200, "1 face"


@functools.cache
def face_photo() -> bytes:
    """The photo the cases are cut from, read when they are collected (empty without the data:
    the photo cases then fail on their status)."""
    path = SHARED_DATA / FACE
    return path.read_bytes() if path.is_file() else b""


def form_cases(face: bytes):
    named = lambda n: {"person_name": n}  # noqa: E731
    yield "wrong field name", "/analyze", dict(files={"image": ("a.jpg", face)}), 422
    yield "no body", "/analyze", dict(), 422
    yield "register without name", "/register", dict(files={"file": ("a.jpg", face)}), 422
    yield "register blank name", "/register", dict(files={"file": ("a.jpg", face)}, data=named("   ")), 422
    yield "register 101-char name", "/register", dict(files={"file": ("a.jpg", face)}, data=named("x" * 101)), 422
    yield "register name with newline", "/register", dict(files={"file": ("a.jpg", face)}, data=named("a\nb")), 422
    yield "register name with NUL", "/register", dict(files={"file": ("a.jpg", face)}, data=named("a\x00b")), 422
    yield "register without file", "/register", dict(data=named("Ann")), 422
    yield "register text file", "/register", dict(files={"file": ("a.jpg", b"text")}, data=named("Ann")), 415
    yield ("register photo without face", "/register",
           dict(files={"file": ("a.png", encode(Image.new("RGB", (200, 200)), "PNG"))}, data=named("Ann")), 400)
    yield "oversized upload", "/analyze", dict(files={"file": ("a.jpg", b"\xff\xd8\xff" + b"\x00" * (11 << 20))}), 413


ROUTE_CASES = [("GET", "/persons/known_nobody_1", 404), ("DELETE", "/persons/unknown_1_0000", 404),
               ("PATCH", "/persons/unknown_1_0000", 422), ("GET", "/persons?limit=0", 422),
               ("GET", "/persons?limit=100000", 422), ("GET", "/persons?identity=friends", 422),
               ("GET", "/analyze", 405), ("GET", "/no/such/route", 404)]


def _ids(cases):
    return [c[0] for c in cases]


@pytest.fixture(scope="module")
def face_bytes(shared_data):
    return (shared_data / FACE).read_bytes()


@pytest_asyncio.fixture(scope="module")
async def api(triton_settings, tmp_path_factory):
    """One API for every case: each case checks that it left no rows behind but its own faces."""
    async with running_api(api_settings(triton_settings, tmp_path_factory.mktemp("bad"), "sqlite")) as client:
        yield client


async def detections(api) -> tuple[int, int]:
    stats = (await api.get("/stats")).json()
    return stats["total_detections"], stats["unknown_faces"]


async def assert_healthy(api):
    health = await api.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"


@pytest.mark.parametrize("case", list(cases(face_photo())), ids=_ids(cases(face_photo())))
async def test_bad_or_odd_upload(api, case):
    name, data, status, text = case
    before, _ = await detections(api)
    r = await api.post("/analyze", files={"file": ("upload.txt", data, "text/plain")})
    assert r.status_code == status, (name, r.text)
    body = r.json()
    assert text in body["message"], (name, body)
    if status == 200:
        expected = before + len(body["faces"])  # one detection per face found
    else:
        assert body["success"] is False and body["error"], name
        assert "Traceback" not in r.text
        expected = before  # nothing partial
    assert (await detections(api))[0] == expected
    await assert_healthy(api)


@pytest.mark.parametrize("case", list(form_cases(face_photo())), ids=_ids(form_cases(b"")))
async def test_bad_form(api, case):
    name, path, kwargs, status = case
    before = await detections(api)
    r = await api.post(path, **kwargs)
    assert r.status_code == status, (name, r.text)
    assert r.json()["success"] is False and r.json()["message"], name
    assert await detections(api) == before


@pytest.mark.parametrize("method,path,status", ROUTE_CASES)
async def test_bad_route_or_query(api, method, path, status):
    r = await api.request(method, path)
    assert r.status_code == status, (method, path, r.text)
    assert r.json()["success"] is False


async def test_names_are_data_never_sql(triton_settings, tmp_path, face_bytes):
    # stored and returned as sent (one face under two names needs force=true: without it the
    # second is a 409 face_matches_other_person)
    tricky_names = ("Robert'); DROP TABLE known_faces;--", "Zoë Ñandú 李小龍")
    async with running_api(api_settings(triton_settings, tmp_path, "sqlite")) as api:
        for tricky in tricky_names:
            r = await api.post("/register", files={"file": ("a.jpg", face_bytes)},
                               data={"person_name": tricky, "largest_face": "true", "force": "true"})
            assert r.status_code == 200, r.text
            assert r.json()["message"].endswith(tricky)
        page = (await api.get("/persons", params={"identity": "known"})).json()
        assert sorted(p["person_name"] for p in page["persons"]) == sorted(tricky_names)
        await assert_healthy(api)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
async def test_exif_rotated_photos_give_boxes_of_the_upright_image(triton_settings, tmp_path, face_bytes, fmt):
    upright = Image.open(io.BytesIO(face_bytes)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # pixels as a sideways camera wrote them
    rotated = encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    async with running_api(api_settings(triton_settings, tmp_path, "sqlite")) as api:
        a = (await api.post("/analyze", files={"file": ("up.png", encode(upright, "PNG"))})).json()
        b = (await api.post("/analyze", files={"file": ("rot", rotated)})).json()
    assert b["image"] == {"width": upright.width, "height": upright.height}
    assert len(a["faces"]) == len(b["faces"]) == 1
    box_a, box_b = a["faces"][0]["bbox"], b["faces"][0]["bbox"]
    assert all(abs(box_a[k] - box_b[k]) <= 6 for k in box_a), (box_a, box_b)
