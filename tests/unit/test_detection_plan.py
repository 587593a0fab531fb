"""The detection plan: which detector inputs a photo gets for the promised minimum face size,
and how much a JPEG may be reduced while decoding. Pure geometry, no model."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from pipeline import detect as D
from pipeline.decode import decode_reduced


def test_small_photos_keep_the_one_letterbox_pass():
    for w, h in ((480, 320), (112, 112), (300, 480)):
        (win,) = D.plan(w, h)
        assert win.letterbox and win.shape == (D.DETECTOR_SIZE, D.DETECTOR_SIZE)
        assert win.scale == pytest.approx(D.DETECTOR_SIZE / max(w, h))


def test_a_larger_minimum_face_keeps_larger_photos_on_the_fast_path():
    # 24 px faces need the detector at 1:1; 96 px faces in a 1920 px photo show at 24 px in 480
    assert [w.letterbox for w in D.plan(1920, 1080, min_face=96)] == [True]
    assert not D.plan(1920, 1080, min_face=24)[-1].letterbox


def test_medium_photos_get_one_pass_of_their_own_shape():
    (win,) = D.plan(640, 360)
    assert (win.scale, win.shape, win.max_face) == (1.0, (384, 640), math.inf)
    (win,) = D.plan(480, 720)
    assert win.shape == (736, 480)
    # above one tile's pixels: tiles, so that no detector batch holds more than its count of tiles
    wins = D.plan(1920, 1080)
    assert wins[0].letterbox and all(w.shape[0] * w.shape[1] <= D.TILE ** 2 for w in wins[1:])


def _faces_fit(windows, width, height, trials=3000, seed=0):
    """Every face a level of tiles answers for lies whole inside one of its tiles, clear of the
    tile edges that cut the photo, at that level's scale."""
    for scale in {w.scale for w in windows if not w.letterbox}:
        _faces_fit_level([w for w in windows if w.scale == scale], width, height, trials, seed)


def _faces_fit_level(tiles, width, height, trials, seed):
    rng = np.random.default_rng(seed)
    lw, lh = round(width * tiles[0].scale), round(height * tiles[0].scale)
    for _ in range(trials):
        size = rng.uniform(D.DETECTOR_MIN_FACE, tiles[0].max_face)
        x, y = rng.uniform(0, lw - size), rng.uniform(0, lh - size)
        ok = False
        for t in tiles:
            left, top, right, bottom = t.inner
            x0, y0 = x - t.x0, y - t.y0
            if ((x0 >= t.margin if left else x0 >= 0) and (y0 >= t.margin if top else y0 >= 0)
                    and (x0 + size <= t.w - t.margin if right else x0 + size <= t.w)
                    and (y0 + size <= t.h - t.margin if bottom else y0 + size <= t.h)):
                ok = True
                break
        assert ok, (x, y, size)


@pytest.mark.parametrize("width,height", [(4000, 3000), (7300, 5475), (3000, 4000), (2600, 1000), (970, 2204)])
def test_large_photos_get_a_pyramid_of_tiles_down_to_the_promised_face(width, height):
    wins = D.plan(width, height)
    assert wins[0].letterbox
    tiles = wins[1:]
    for s in {t.scale for t in tiles}:
        level = [t for t in tiles if t.scale == s]
        assert len({t.shape for t in level}) == 1, "one shape per level, so its tiles batch together"
        th, tw = level[0].shape
        assert th * tw <= D.TILE ** 2 and th % 32 == 0 and tw % 32 == 0
        assert all(tw - t.w < 32 and th - t.h < 32 for t in level), "padding only to a multiple of 32"
    assert max(t.scale for t in tiles) == 1.0  # 24 px faces at DETECTOR_MIN_FACE = 24
    scales = sorted({t.scale for t in tiles} | {wins[0].scale})
    assert all(b / a <= D.LEVEL_STEP + 1e-6 for a, b in zip(scales, scales[1:]))
    for s in scales[1:]:  # each level covers its scaled photo
        level = [t for t in tiles if t.scale == s]
        lw, lh = round(width * s), round(height * s)
        assert max(t.x0 + t.w for t in level) == lw and max(t.y0 + t.h for t in level) == lh
        assert min(t.x0 for t in level) == 0 and min(t.y0 for t in level) == 0
    _faces_fit(wins, width, height)


def _brute_force_grid(width, height, overlap, max_pixels):
    """Every count of columns and rows whose windows still advance by 32 px: the fewest pixels."""
    best = None
    for nx in range(1, width // 32 + 2):
        for ny in range(1, height // 32 + 2):
            sx = D._ceil32(width) if nx == 1 else D._ceil32((width + (nx - 1) * overlap) / nx)
            sy = D._ceil32(height) if ny == 1 else D._ceil32((height + (ny - 1) * overlap) / ny)
            if (nx > 1 and (sx >= width or sx - overlap < 32)) or (ny > 1 and (sy >= height or sy - overlap < 32)):
                continue
            if sx * sy <= max_pixels and (best is None or (nx * ny * sx * sy, nx * ny) < best):
                best = (nx * ny * sx * sy, nx * ny)
    return best


@pytest.mark.parametrize("width,height,overlap", [(1280, 720, 100), (1920, 1080, 75), (4000, 3000, 108),
                                                  (1386, 1039, 108), (7300, 5475, 93), (2600, 1000, 90),
                                                  (970, 2204, 75), (5000, 300, 120)])
def test_each_level_gets_the_grid_of_tiles_with_the_fewest_pixels(width, height, overlap):
    (tw, xs), (th, ys) = D._grid(width, height, overlap, D.TILE ** 2)
    assert (len(xs) * len(ys) * tw * th, len(xs) * len(ys)) == _brute_force_grid(width, height, overlap, D.TILE ** 2)
    for side, origins, length in ((tw, xs, width), (th, ys, height)):
        assert origins[0] == 0 and (origins[-1] + side == length or origins == [0])
        assert all(b - a <= side - overlap for a, b in zip(origins, origins[1:])), "neighbours overlap enough"


def test_tiles_cost_little_more_than_the_pixels_they_cover():
    """Overlap and padding: square 640 px tiles paid 2.7x a 720p photo's pixels and 1.6x a 12 MP
    photo's; the grid of each level 1.2x and 1.4x (the letterbox aside)."""
    for (width, height), most in (((1280, 720), 1.25), ((1920, 1080), 1.35), ((4000, 3000), 1.45)):
        wins = [w for w in D.plan(width, height) if not w.letterbox]
        covered = sum(round(width * s) * round(height * s) for s in {w.scale for w in wins})
        assert sum(w.shape[0] * w.shape[1] for w in wins) <= most * covered


@pytest.mark.parametrize("tile", [480, 640, 800])
def test_no_window_but_the_letterbox_exceeds_the_tile_pixels(tile):
    rng = np.random.default_rng(1)
    for _ in range(60):
        width, height = (int(v) for v in rng.integers(200, 9000, 2))
        if rng.random() < 0.2:  # panoramas and strips
            width = int(rng.integers(6000, 20000))
            height = int(rng.integers(200, 800))
        wins = D.plan(width, height, tile=tile)
        assert all(w.shape[0] * w.shape[1] <= tile * tile for w in wins if not w.letterbox)
        for s in {w.scale for w in wins if not w.letterbox}:  # each level covers its scaled photo
            level = [w for w in wins if w.scale == s]
            lw, lh = max(1, round(width * s)), max(1, round(height * s))
            assert max(w.x0 + w.w for w in level) == lw and max(w.y0 + w.h for w in level) == lh


def test_reduction_keeps_the_detector_inputs_and_the_chips_at_full_quality():
    assert D.reduction(4000, 3000, 24) == 1  # 24 px faces: the detector sees the photo at 1:1
    assert D.reduction(4000, 3000, 96) == 1  # the chip of a 96 px face needs all its pixels
    assert D.reduction(4000, 3000, 192) == 2
    assert D.reduction(4000, 3000, 400) == 4
    assert D.reduction(4000, 3000, 800) == 8
    assert D.reduction(800, 600, 800) == 1  # the letterbox needs 480 of the 800 px
    assert D.reduction(1920, 1080, 200) == 2


def test_tile_rules_drop_cut_faces_and_faces_of_a_coarser_level():
    win = D.Window(1.0, 600, 0, 640, 640, (640, 640), max_face=60, margin=10,
                   inner=(True, False, True, True))
    n = len(D.priors(640, 640))
    loc, conf, lmk = np.zeros((n, 4), np.float32), np.zeros((n, 2), np.float32), np.zeros((n, 10), np.float32)
    pri = D.priors(640, 640)
    # anchors: a 32 px one in the middle (kept), one touching the left edge (cut), a 128 px one (coarser level)
    mid = np.flatnonzero((pri[:, 2] == 32) & (np.abs(pri[:, 0] - 320) < 8) & (np.abs(pri[:, 1] - 320) < 8))[0]
    edge = np.flatnonzero((pri[:, 2] == 32) & (pri[:, 0] < 16) & (np.abs(pri[:, 1] - 320) < 8))[0]
    big = np.flatnonzero((pri[:, 2] == 128) & (np.abs(pri[:, 0] - 320) < 16) & (np.abs(pri[:, 1] - 320) < 16))[0]
    conf[[mid, edge, big], 1] = 0.9
    boxes, scores, _, _ = D.window_faces(loc, conf, lmk, win)
    assert len(boxes) == 1
    assert boxes[0][0] == pytest.approx(pri[mid, 0] - 16 + 600)  # moved into photo pixels


def test_one_nms_merges_a_face_seen_by_two_windows():
    a = (np.array([[10, 10, 50, 50]], np.float32), np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32))
    b = (np.array([[12, 11, 51, 52]], np.float32), np.array([0.8], np.float32), np.ones((1, 5, 2), np.float32))
    c = (np.array([[200, 10, 260, 70]], np.float32), np.array([0.7], np.float32), np.ones((1, 5, 2), np.float32))
    boxes, scores, _ = D.merge([a, b, c], 400, 300, max_faces=0)
    assert len(boxes) == 2 and scores.tolist() == pytest.approx([0.7, 0.9])  # largest first
    boxes, _, _ = D.merge([a, b, c], 400, 300, max_faces=1)
    assert boxes.tolist() == [[200, 10, 260, 70]]  # the cap keeps the largest


def test_a_face_the_letterbox_sees_well_keeps_the_letterbox_box():
    # the same face from the letterbox (rank boosted) and, with a higher score, from a tile
    lb = (np.array([[100, 100, 200, 220]], np.float32), np.array([0.8], np.float32),
          np.zeros((1, 5, 2), np.float32), np.array([1.8], np.float32))
    tile = (np.array([[104, 98, 203, 224]], np.float32), np.array([0.99], np.float32),
            np.ones((1, 5, 2), np.float32), np.array([0.99], np.float32))
    boxes, scores, lmk = D.merge([tile, lb], 400, 300)
    assert boxes.tolist() == [[100, 100, 200, 220]] and scores.tolist() == pytest.approx([0.8])
    assert lmk.sum() == 0


def _jpeg(w, h, orientation=None):
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 4] = (255, 0, 0)
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(rgb).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def test_jpeg_is_decoded_reduced_in_the_dct_domain_with_its_orientation():
    full, fx, fy = decode_reduced(_jpeg(1001, 600))
    assert full.shape == (600, 1001, 3) and (fx, fy) == (1.0, 1.0)
    half, fx, fy = decode_reduced(_jpeg(1001, 600), reduction=lambda w, h: 2)
    assert half.shape == (300, 501, 3) and (fx, fy) == pytest.approx((1001 / 501, 2.0))
    # EXIF orientation 6 (rotate 90): upright 600 x 1001, the factors follow the upright axes
    rot, fx, fy = decode_reduced(_jpeg(1001, 600, orientation=6), reduction=lambda w, h: 4)
    assert rot.shape == (251, 150, 3) and (fx, fy) == pytest.approx((600 / 150, 1001 / 251))


def test_formats_without_a_cheaper_path_come_at_full_size():
    buf = io.BytesIO()
    Image.new("RGB", (900, 500)).save(buf, "PNG")
    rgb, fx, fy = decode_reduced(buf.getvalue(), reduction=lambda w, h: 4)
    assert rgb.shape == (500, 900, 3) and (fx, fy) == (1.0, 1.0)


# -- the two-phase default: phase 1 (the letterbox) answers alone only for photos of large faces
def test_phase_one_settles_only_when_every_face_is_well_above_the_letterbox_floor():
    s0 = D.DETECTOR_SIZE / 4000  # a 12 MP photo: the letterbox sees it at 0.12
    big = D.COARSE_FACE / s0  # px of the photo: COARSE_FACE px in the letterbox
    assert D.coarse_pass_settles([big * 2], s0)  # a portrait: one face of 30% of the long side
    assert D.coarse_pass_settles([big, big * 3], s0)
    assert not D.coarse_pass_settles([], s0), "no face found: maybe they are all too small"
    assert not D.coarse_pass_settles([big * 3, big * 0.99], s0), "one face near the floor: a group"
    assert not D.coarse_pass_settles([D.DETECTOR_MIN_FACE / s0], s0)
    # the rule is relative to the letterbox: the same 200 px face settles a 720p photo alone
    assert D.coarse_pass_settles([200], D.DETECTOR_SIZE / 1280) == (200 * 480 / 1280 >= D.COARSE_FACE)


def test_phase_one_decodes_as_small_as_the_letterbox_and_the_chips_of_its_faces_allow():
    for w, h in ((4000, 3000), (1920, 1080), (1280, 720), (7300, 5475), (640, 480), (3000, 4000)):
        k = D.first_reduction(w, h)
        s0 = D.DETECTOR_SIZE / max(w, h)
        assert max(w, h) / k >= D.DETECTOR_SIZE, "the letterbox at full quality"
        # a face phase 1 may answer for alone (COARSE_FACE in the letterbox) keeps a CHIP_FACE chip
        assert k == 1 or D.COARSE_FACE / s0 / k >= D.CHIP_FACE
        # and no larger reduction would do: the next one breaks one of the two
        if k < max(D.REDUCTIONS):
            k2 = 2 * k
            assert max(w, h) / k2 < D.DETECTOR_SIZE or D.COARSE_FACE / s0 / k2 < D.CHIP_FACE
    assert D.first_reduction(640, 480) == 1  # a small photo: nothing to save
    assert D.first_reduction(4000, 3000) > 1 and D.first_reduction(4000, 3000) > D.reduction(4000, 3000, 24)


def _grey_jpeg(w, h):
    rgb = np.full((h, w, 3), 120, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_the_photo_goes_to_phase_two_decoded_for_the_promise_when_phase_one_is_not_enough():
    from pipeline.analysis import faces, next_pass, open_photo

    data = _grey_jpeg(4000, 3000)
    photo = open_photo(data)  # the default promise
    assert photo.second and photo.reduced == D.first_reduction(4000, 3000)
    assert [w.letterbox for w in photo.windows] == [True] and photo.size == (4000, 3000)
    assert photo.rgb.shape[1] == 4000 // photo.reduced
    # phase 1 found nothing (no candidates): phase 2, re-decoded at full size for 24 px faces
    (again,) = next_pass([photo])
    assert again is photo and photo.passes == 2 and photo.rgb.shape[:2] == (3000, 4000)
    assert photo.windows and not any(w.letterbox for w in photo.windows)
    assert next_pass([photo]) == [], "two phases at most"
    assert len(faces(photo)[0]) == 0

    # phase 1 found a large face (30% of the long side): the photo is done after one pass
    photo = open_photo(data)
    photo.candidates.append((np.array([[1000, 1000, 2200, 2300]], np.float32), np.array([0.99], np.float32),
                             np.zeros((1, 5, 2), np.float32), np.array([0.99], np.float32)))
    assert next_pass([photo]) == [] and photo.passes == 1
    assert photo.rgb.shape[1] == 4000 // photo.reduced, "no second decode"


def test_small_photos_and_the_legacy_single_pass_have_no_phase_two():
    from pipeline.analysis import next_pass, open_photo

    small = open_photo(_grey_jpeg(480, 360))
    assert not small.second and next_pass([small]) == []
    legacy = open_photo(_grey_jpeg(4000, 3000), promise=0)
    assert not legacy.second and legacy.rgb.shape[:2] == (3000, 4000), "promise 0: full decode, one pass"
    # a request's larger minimum that the letterbox covers: decoded for it, no phase 2
    big = open_photo(_grey_jpeg(1920, 1080), min_face_size=400)
    assert not big.second and big.reduced == D.reduction(1920, 1080, 400)
