"""Face alignment and pixel conversion without a model: the similarity transform onto the
template, the chip canvas, and the strip-wise conversion of odd pixel formats to RGB."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline import align
from pipeline.contract import CHIP_SIZE
from pipeline.decode import STRIP_ROWS, _to_rgb


def similarity_matrix(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize("scale,angle,tx,ty", [(1.0, 0.0, 0.0, 0.0), (0.37, 0.4, 12.5, -3.0),
                                               (2.5, -1.2, -40.0, 77.0)])
def test_similarity_recovers_an_exact_transform(scale, angle, tx, ty):
    src = np.array([[10, 20], [50, 22], [30, 45], [15, 70], [48, 68]], np.float64)
    m = similarity_matrix(scale, angle, tx, ty)
    np.testing.assert_allclose(align._similarity(src, apply(m, src)), m, atol=1e-9)


def test_similarity_never_mirrors_and_fits_noisy_points_in_least_squares():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    # a mirrored target: the best proper similarity, not the reflection
    mirrored = src * [-1, 1]
    m = align._similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    dst = apply(similarity_matrix(0.8, 0.3, 5, 6), src) + rng.normal(0, 0.5, src.shape)
    m = align._similarity(src, dst)
    residual = np.linalg.norm(apply(m, src) - dst, axis=1).mean()
    assert residual < 1.0 and np.linalg.det(m[:, :2]) == pytest.approx(0.64, rel=0.05)


def test_chips_put_the_landmarks_on_the_template():
    # a photo with one bright dot per landmark, scaled and shifted from the template
    m = similarity_matrix(1.5, 0.0, 40, 30)
    lmk = apply(m, align.TEMPLATE.astype(np.float64))
    rgb = np.zeros((400, 400, 3), np.uint8)
    for x, y in lmk.round().astype(int):
        rgb[y - 1:y + 2, x - 1:x + 2] = 255
    chips = align.face_chips(rgb, lmk[None].astype(np.float32))
    assert chips.shape == (1, CHIP_SIZE, CHIP_SIZE, 3) and chips.dtype == np.uint8
    for x, y in align.TEMPLATE.round().astype(int):
        assert chips[0, y, x].max() > 100, (x, y)


def test_a_large_face_is_shrunk_through_the_pyramid_onto_the_same_place():
    m = similarity_matrix(6.0, 0.1, 100, 50)  # scale < 0.5 the other way: the pyramid path
    lmk = apply(m, align.TEMPLATE.astype(np.float64))
    rgb = np.zeros((1400, 1400, 3), np.uint8)
    for x, y in lmk.round().astype(int):
        rgb[y - 8:y + 9, x - 8:x + 9] = 255
    chip = align.face_chips(rgb, lmk[None].astype(np.float32))[0]
    for x, y in align.TEMPLATE.round().astype(int):
        assert chip[y, x].max() > 100, (x, y)


def test_no_landmarks_give_an_empty_stack():
    assert align.face_chips(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 5, 2))).shape == (0, CHIP_SIZE, CHIP_SIZE, 3)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "RGBA", "LA"])
def test_to_rgb_matches_pillow_over_several_strips(mode):
    h = STRIP_ROWS * 2 + 17  # more than one strip, the last one partial
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (h, 33, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257)
        expect = np.repeat(np.asarray(base.convert("L"))[..., None], 3, axis=2)
    elif mode in ("RGBA", "LA"):
        img = base.convert(mode)
        img.putalpha(255)  # opaque: the composite over white is the picture itself
        expect = np.asarray(img.convert("RGB"))
    else:
        img = base.convert(mode)
        expect = np.asarray(img.convert("RGB"))
    out = _to_rgb(img)
    assert out.shape == (h, 33, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out.astype(int), expect.astype(int), atol=1)


def test_to_rgb_stretches_a_float_image_over_its_own_range():
    a = np.full((STRIP_ROWS + 5, 3), 0.25, np.float32)
    a[STRIP_ROWS:] = 0.75  # the brightest rows sit in the second strip
    out = _to_rgb(Image.fromarray(a))
    assert (out[:STRIP_ROWS] == 0).all() and (out[STRIP_ROWS:] == 255).all()


def test_to_rgb_composites_transparency_over_white():
    img = Image.new("RGBA", (4, STRIP_ROWS + 3), (0, 0, 0, 0))
    img.putpixel((1, 1), (10, 20, 30, 255))
    out = _to_rgb(img)
    assert out[0, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [10, 20, 30]
