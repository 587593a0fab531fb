"""The decoder's bounded header walks, format pinning, cost budget and strip conversion,
on generated inputs (tests/costly_inputs.py) and real encoders."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageOps

from core.settings import PROJECT_ROOT
from pipeline import decode
from tests.costly_inputs import CASES, encode


@pytest.mark.parametrize("name,make,status,code", CASES, ids=[c[0] for c in CASES])
def test_costly_inputs_are_refused_from_the_header_in_milliseconds(name, make, status, code):
    data = make()
    expected = decode.ImageTooCostlyError if code == "image_too_costly" else decode.ImageDecodeError
    for check in (decode.check_header, decode.decode_image):
        t = time.perf_counter()
        with pytest.raises(expected) as info:
            check(data, 40_000_000, 16)
        assert time.perf_counter() - t < 0.5, name
        assert code != "invalid_image" or not isinstance(info.value, decode.ImageTooCostlyError)


def test_ordinary_photos_pass_the_walks():
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), np.uint8))
    for fmt, kw in [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("GIF", {}),
                    ("BMP", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}), ("WEBP", {})]:
        kind, w, h = decode.check_header(encode(rgb, fmt, **kw))
        assert (w, h) == (400, 300), fmt
        assert decode.decode_image(encode(rgb, fmt, **kw)).shape == (300, 400, 3)


def test_decoder_is_pinned_to_the_sniffed_format(monkeypatch):
    seen = []
    real_open = Image.open
    monkeypatch.setattr(decode.Image, "open", lambda fp, mode="r", formats=None: seen.append(formats) or real_open(fp, mode, formats))
    for fmt in ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP"):
        decode.check_header(encode(Image.new("RGB", (32, 32)), fmt))
    assert seen == [["JPEG"], ["PNG"], ["BMP"], ["GIF"], ["TIFF"], ["WEBP"]]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "I;16", "I", "F", "P", "L", "CMYK"])
def test_strip_conversion_matches_a_whole_image_conversion(mode):
    rng = np.random.default_rng(2)
    base = Image.fromarray(rng.integers(0, 255, (700, 300, 4), np.uint8), "RGBA")  # > 2 strips
    if mode in ("I;16", "I", "F"):
        values = rng.integers(0, 4000, (700, 300)).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
        img = Image.fromarray(values)  # uint16 -> I;16, int32 -> I, float32 -> F
        ref = values.astype(np.float64)
        if mode == "F":
            expected = ((ref - ref.min()) * (255 / (ref.max() - ref.min()))).astype(np.uint8)
        else:
            expected = (values.astype(np.uint32) >> (int(values.max()).bit_length() - 8)).astype(np.uint8)
        got = decode._to_rgb(img)
        assert np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 0], got[..., 2])
        return
    img = base.convert(mode) if mode != "PA" else base.convert("P").convert("PA")
    got = decode._to_rgb(img).astype(int)
    if "A" in mode:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        want = np.asarray(Image.alpha_composite(white, rgba).convert("RGB")).astype(int)
    else:
        want = np.asarray(img.convert("RGB")).astype(int)
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    img = Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 60, 4), np.uint8), "RGBA")
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(img, "PNG", exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGBA"))
    white = 255 * (255 - want[..., 3:].astype(int))
    want_rgb = ((want[..., :3].astype(int) * want[..., 3:] + white + 127) // 255).astype(np.uint8)
    assert np.array_equal(decode.decode_image(data), want_rgb)


MEASURE = """
import resource, sys
data = open(sys.argv[1], "rb").read()
from pipeline.decode import decode_image
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decode_image(data)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def test_alpha_and_16_bit_images_decode_within_their_memory_estimate(tmp_path):
    """Peak memory of a real decode in a fresh process stays within the estimate the budget
    is checked against (before strips, a 30 MP RGBA PNG peaked at 688 MiB, now ~240)."""
    w, h = 4000, 3000
    alpha = np.zeros((h, w, 4), np.uint8)
    alpha[..., 1] = 200
    alpha[..., 3] = np.arange(w, dtype=np.uint32)[None, :] % 256
    grey16 = (np.arange(w, dtype=np.uint32)[None, :] * 16).repeat(h, 0).astype(np.uint16)
    for name, img in (("rgba", Image.fromarray(alpha, "RGBA")), ("grey16", Image.fromarray(grey16))):
        path = tmp_path / f"{name}.png"
        img.save(path, "PNG", compress_level=1)
        estimate = decode.decode_bytes("png", img.mode, w, h, {}) / 2**20
        out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, check=True)
        peak = float(out.stdout.strip())
        assert peak < estimate * 1.25, (name, peak, estimate)
