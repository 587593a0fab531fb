"""RetinaFace pre- and post-processing: detection plan (letterbox, native pass or tiles), priors,
box decoding, one NMS over every window of a photo.

How much of a photo the detector must see is decided by the smallest face we promise to find
(`MIN_FACE_SIZE`, pixels of the original photo) and by the smallest face the detector finds in
its own input (`DETECTOR_MIN_FACE`, measured). Three plans, cheapest first:

- letterbox: the whole photo scaled to fit one DETECTOR_SIZE square, when that scale still shows
  the smallest promised face at DETECTOR_MIN_FACE pixels (the fast path, batched across requests);
- native: the photo at the detection scale in one pass of its own shape (padded to a multiple of
  32), when that is at most TILE x TILE pixels: no overlap, little padding;
- tiled: the letterbox pass for large faces plus a pyramid of overlapping tiles, from the
  letterbox scale up to the detection scale in steps of at most LEVEL_STEP. Each level answers
  for the faces the coarser one may miss; tiles overlap by enough to hold those faces whole.
  Each level is cut into the grid of equal tiles (at most TILE x TILE pixels, sides multiples
  of 32) with the fewest pixels in all (`_grid`), so little is paid for overlap and padding.
All windows of a photo are merged with one NMS. The tiles of a level have one shape, so a
photo's tiles are batched with each other (Triton's dynamic batcher merges them).

By default the plan runs in two phases (pipeline.analysis), so that photos whose faces are all
large pay for one letterbox pass only:
1. the JPEG is decoded reduced as far as the letterbox and the chip of a face of COARSE_FACE
   letterbox pixels allow (`first_reduction`), and only the letterbox pass runs;
2. the rest of the plan (native pass or tiles, the JPEG decoded again at `reduction`) runs only
   when phase 1 found no face, or a face narrower than COARSE_FACE (48) pixels of the letterbox
   (`coarse_pass_settles`): a face that close to the letterbox's floor (24) says smaller faces
   may be in the photo unseen. All candidates of both phases go through the one NMS.
Phase 1 decodes only as small as keeps the chip of every face it may answer for alone at
CHIP_FACE, so a photo that stops after it needs no second decode for its chips.
Known limitation: a photo with only large faces found by the letterbox (>= COARSE_FACE) and
tiny faces it cannot see (a big face in front of a distant crowd) stops after phase 1 and misses
the tiny ones; the request's min_face_size cannot ask for them either (it only sets a floor).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from pipeline.contract import DET_MEAN_BGR, DETECTOR_SIZE

STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
SCORE_THRESHOLD = 0.6  # chosen on ../shared/data with `python -m export evaluate` (README)
NMS_IOU = 0.4

# Box width (px of the detector input) from which RetinaFace-MobileNet0.25 finds faces: recall
# 0.97 at 24 px, 0.74 at 20, 0.53 at 16 on faces of ../shared/data pasted into 480 px inputs
# at score 0.6 (README, "Small faces"). Lower score thresholds did not move it much.
DETECTOR_MIN_FACE = 24
MIN_FACE_SIZE = 24  # the promise: faces this wide (px of the original photo) are found
LEVEL_STEP = 3.0  # largest scale ratio between two pyramid levels
# Every window other than the letterbox holds at most TILE x TILE pixels: the detector's dynamic
# batcher stacks up to detector_max_batch inputs of one shape, and 16 native 2 MP inputs took the
# machine's memory (make test, 50 concurrent 2.1 MP photos); a batch of 8 windows of 640 x 640
# peaks at 315 MB in onnxruntime (1144 MB for 8 of 1920 x 1088). Larger photos are tiled.
TILE = 640
REDUCTIONS = (8, 4, 2)  # JPEG DCT-domain decode scales libjpeg offers (1/8, 1/4, 1/2)
# Face width (px of the decoded image) from which an aligned chip is as good as one from the
# full-size photo: SFace embeddings of faces downscaled to 96/64/48/32 px against full size,
# cosine 0.984/0.977/0.961/0.908 (resampling alone gives 0.986), 12 photos of ../shared/data
CHIP_FACE = 96
# Phase 1 (the letterbox alone) answers for a photo when every face it found is at least this
# wide in the letterbox (px of the detector input): twice the detector's floor, a face of 10% of
# the photo's long side, so a face the letterbox cannot see (< ~24 px) would be under half the
# narrowest face found. Measured on the letterbox pass (README, "Small faces"): the 21 one-face
# photos of ../shared/data have their face at 62-343 px at every size class (all settle; 3x, 72
# px, would send 2 of them through the whole plan, 48 tiles at 12 MP); the group photos of the
# evaluation set and of detection/ with faces left to find show their narrowest found face at
# 9-44 px, or none (all go on), the one exception a grid of 15 faces all at 75 px.
COARSE_FACE = 2 * DETECTOR_MIN_FACE


PAD_RGB = tuple(round(v) for v in DET_MEAN_BGR[::-1])  # zero after the graph subtracts the mean


def letterbox(rgb: np.ndarray, size: int = DETECTOR_SIZE) -> tuple[np.ndarray, float]:
    """Scale so the longer side is `size`, pad right/bottom: uint8 RGB [size, size, 3]."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    # area averaging only where bilinear would alias (6x cheaper otherwise)
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    canvas = cv2.copyMakeBorder(resized, 0, size - nh, 0, size - nw, cv2.BORDER_CONSTANT, value=PAD_RGB)
    return canvas, scale


@lru_cache(maxsize=32)
def priors(size: int, width: int | None = None) -> np.ndarray:
    """Anchor centres and sizes (cx, cy, w, h) in pixels, in the network's output order, for an
    input `size` high and `width` wide (square if not given)."""
    width = width or size
    rows = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        n, m = -(-size // step), -(-width // step)
        ys, xs = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
        cx = ((xs + 0.5) * step).reshape(-1, 1)
        cy = ((ys + 0.5) * step).reshape(-1, 1)
        for s in sizes:
            rows.append(np.stack([cx, cy, np.full_like(cx, s), np.full_like(cx, s)], axis=-1))
    # output order is row, column, then anchor size within each cell
    per_step, start = [], 0
    for step, sizes in zip(STEPS, MIN_SIZES):
        n, m = -(-size // step), -(-width // step)
        block = np.concatenate(rows[start:start + len(sizes)], axis=1)  # [cells, sizes, 4]
        per_step.append(block.reshape(n * m * len(sizes), 4))
        start += len(sizes)
    return np.concatenate(per_step).astype(np.float32)


def _decode(loc, conf, landmarks, height, width, score_threshold):
    """Faces above the threshold in one detector input: boxes x1y1x2y2, scores, landmarks
    [K,5,2], in pixels of that input."""
    scores = conf[:, 1]
    keep = np.flatnonzero(scores > score_threshold)
    p = priors(height, width)[keep]
    d = loc[keep]
    v0, v1 = VARIANCES
    centre = p[:, :2] + d[:, :2] * v0 * p[:, 2:]
    wh = p[:, 2:] * np.exp(d[:, 2:] * v1)
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
    lmk = p[:, None, :2] + landmarks[keep].reshape(-1, 5, 2) * v0 * p[:, None, 2:]
    return boxes, scores[keep], lmk


def _empty():
    return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


def finish(boxes, scores, lmk, width: int, height: int, score_threshold: float = SCORE_THRESHOLD,
           nms_iou: float = NMS_IOU, min_face_size: int = 0, max_faces: int = 0, rank=None):
    """One NMS over every candidate of a photo (in order of `rank`, default the scores), clip,
    size filter, largest first, cap."""
    if len(boxes) == 0:
        return _empty()
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    rank = scores if rank is None else rank
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), rank.tolist(), score_threshold, nms_iou)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    boxes, s, lmk = boxes[idx], scores[idx], lmk[idx]

    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ok = side >= max(min_face_size, 1)
    boxes, s, lmk = boxes[ok], s[ok], lmk[ok]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-area, kind="stable")
    if max_faces > 0:
        order = order[:max_faces]
    return (boxes[order].astype(np.float32), s[order].astype(np.float32),
            lmk[order].astype(np.float32))


def postprocess(loc: np.ndarray, conf: np.ndarray, landmarks: np.ndarray, size: int, scale: float,
                width: int, height: int, score_threshold: float = SCORE_THRESHOLD,
                nms_iou: float = NMS_IOU, min_face_size: int = 0, max_faces: int = 0):
    """Decode one letterboxed image's outputs -> boxes x1y1x2y2, scores, landmarks [K,5,2],
    original pixels.

    Faces come largest first; `max_faces` keeps the largest, `min_face_size` drops faces
    whose shorter box side is smaller (original pixels).
    """
    boxes, scores, lmk = _decode(loc, conf, landmarks, size, size, score_threshold)
    return finish(boxes / scale, scores, lmk / scale, width, height, score_threshold, nms_iou,
                  min_face_size, max_faces)


# -- detection plan -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """One detector input cut from the photo scaled by `scale`: the scaled photo's pixels
    [x0, x0+w) x [y0, y0+h), padded right/bottom to `shape` (height, width)."""

    scale: float
    x0: int
    y0: int
    w: int
    h: int
    shape: tuple[int, int]
    # tiles only: faces wider than this (detector px) belong to a coarser level, and a box
    # closer than `margin` to a tile edge inside the photo is a cut face, found whole elsewhere
    max_face: float = math.inf
    margin: float = 0.0
    inner: tuple[bool, bool, bool, bool] = (False, False, False, False)  # left, top, right, bottom
    letterbox: bool = False


def detection_scale(min_face: float) -> float:
    """Scale at which a face `min_face` wide becomes DETECTOR_MIN_FACE wide; never upsampled."""
    return min(1.0, DETECTOR_MIN_FACE / max(min_face, 1))


def _letterbox_scale(width: int, height: int, size: int) -> float:
    return size / max(width, height)


def reduction(width: int, height: int, min_face: float = MIN_FACE_SIZE, size: int = DETECTOR_SIZE) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8 per side) that keeps the detector inputs
    (the letterbox, the smallest face at the detection scale) and the aligned chip of the smallest
    face (CHIP_FACE) at full quality. The chip is the stricter: a 24 px promise means full size."""
    chip = min(1.0, CHIP_FACE / max(min_face, 1))
    need = max(detection_scale(min_face), chip, min(1.0, _letterbox_scale(width, height, size)))
    return next((k for k in REDUCTIONS if 1 / k >= need), 1)


def first_reduction(width: int, height: int, size: int = DETECTOR_SIZE) -> int:
    """The JPEG decode reduction of phase 1: the letterbox at full quality, and the chip of every
    face phase 1 may answer for alone (COARSE_FACE letterbox px or wider) at CHIP_FACE."""
    s0 = _letterbox_scale(width, height, size)
    need = min(1.0, s0 * max(1.0, CHIP_FACE / COARSE_FACE))
    return next((k for k in REDUCTIONS if 1 / k >= need), 1)


def coarse_pass_settles(sides, letterbox_scale: float) -> bool:
    """Phase 1 is the whole answer: it found faces, and the narrowest (`sides`, px of the photo
    the letterbox was cut from) is at least COARSE_FACE px in the letterbox. No face, or one near
    the letterbox's floor, sends the photo to phase 2."""
    sides = np.asarray(sides, np.float64).reshape(-1)
    return len(sides) > 0 and float(sides.min()) * letterbox_scale >= COARSE_FACE


def _ceil32(v: float) -> int:
    return int(-(-math.ceil(v) // 32) * 32)


def _sides(length: int, overlap: float) -> list[tuple[int, int]]:
    """(count, side) of the windows worth trying along an axis of `length` px, neighbours
    overlapping by >= `overlap`, sides multiples of 32: one window, then every count whose
    windows are shorter than the axis and still advance by 32 px or more. Sides never grow."""
    out, n = [(1, _ceil32(length))], 2
    while (side := _ceil32((length + (n - 1) * overlap) / n)) - overlap >= 32:
        if side < length:
            out.append((n, side))
        n += 1
    return out


def _origins(length: int, n: int, side: int) -> list[int]:
    return [0] if n == 1 else [round(i * (length - side) / (n - 1)) for i in range(n)]


@lru_cache(maxsize=256)
def _grid(width: int, height: int, overlap: float, max_pixels: int):
    """The grid of equal tiles over a width x height level with the fewest detector pixels in all
    (then the fewest tiles), no tile over `max_pixels`: ((tile width, x origins), (tile height,
    y origins)). At the finest level square 640 px tiles cost 2.7x the level's pixels at 1280x720
    and 1.6x at 4000x3000 in overlap and padding; this grid 1.2x and 1.4x."""
    cols, rows = _sides(width, overlap), _sides(height, overlap)
    neg_row_sides = [-side for _, side in rows]
    best = None
    for nx, sx in cols:
        # the fewest rows whose tiles fit (more rows add overlap; the next two too, for rounding)
        first = bisect.bisect_left(neg_row_sides, -(max_pixels // sx))
        for ny, sy in rows[first:first + 3]:
            cost = (nx * sx * ny * sy, nx * ny)
            if best is None or cost < best[0]:
                best = (cost, nx, sx, ny, sy)
    if best is None:
        raise ValueError(f"no tiling of {width}x{height} px, overlap {overlap:.0f}, in {max_pixels} px tiles")
    _, nx, sx, ny, sy = best
    return (sx, _origins(width, nx, sx)), (sy, _origins(height, ny, sy))


def plan(width: int, height: int, min_face: float = MIN_FACE_SIZE, size: int = DETECTOR_SIZE,
         tile: int = TILE) -> list[Window]:
    """The detector inputs that find every face at least `min_face` wide (pixels of this image)."""
    s0 = _letterbox_scale(width, height, size)
    nw, nh = max(1, round(width * s0)), max(1, round(height * s0))
    base = Window(s0, 0, 0, nw, nh, (size, size), letterbox=True)
    s = detection_scale(min_face)
    if s <= s0:
        return [base]
    sw, sh = max(1, round(width * s)), max(1, round(height * s))
    if _ceil32(sw) * _ceil32(sh) <= tile * tile:
        native = Window(s, 0, 0, sw, sh, (_ceil32(sh), _ceil32(sw)))
        # the letterbox too when the native pass could hold faces larger than the detector was
        # checked on (faces up to 1.5x DETECTOR_SIZE were found whole on ../shared/data)
        return [native] if min(sw, sh) <= 1.5 * size else [base, native]
    windows = [base]
    levels = math.ceil(math.log(s / s0) / math.log(LEVEL_STEP) - 1e-9)
    step = (s / s0) ** (1 / levels)
    for k in range(1, levels + 1):
        sk = s if k == levels else s0 * step ** k
        lw, lh = max(1, round(width * sk)), max(1, round(height * sk))
        biggest = DETECTOR_MIN_FACE * step * 1.2  # what the coarser level may miss, +20%
        margin = 0.15 * biggest
        (tw, xs), (th, ys) = _grid(lw, lh, biggest + 2 * margin, tile * tile)
        for y0 in ys:
            for x0 in xs:
                w, h = min(tw, lw - x0), min(th, lh - y0)
                windows.append(Window(sk, x0, y0, w, h, (th, tw), biggest, margin,
                                      (x0 > 0, y0 > 0, x0 + w < lw, y0 + h < lh)))
    return windows


def _resize(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    if (w, h) == (rgb.shape[1], rgb.shape[0]):
        return rgb
    # area averaging only where bilinear would alias (6x cheaper otherwise)
    interp = cv2.INTER_AREA if w < rgb.shape[1] * 0.5 else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interp)


def window_inputs(rgb: np.ndarray, windows: list[Window]):
    """Yield (window, uint8 input of window.shape) in plan order; each level is scaled once."""
    height, width = rgb.shape[:2]
    scaled: dict[float, np.ndarray] = {}
    for win in windows:
        if win.letterbox:
            yield win, letterbox(rgb, win.shape[0])[0]
            continue
        if win.scale not in scaled:
            scaled.clear()  # levels come in order: keep one scaled copy at a time
            scaled[win.scale] = _resize(rgb, max(1, round(width * win.scale)), max(1, round(height * win.scale)))
        part = scaled[win.scale][win.y0:win.y0 + win.h, win.x0:win.x0 + win.w]
        yield win, cv2.copyMakeBorder(part, 0, win.shape[0] - win.h, 0, win.shape[1] - win.w,
                                      cv2.BORDER_CONSTANT, value=PAD_RGB)


def window_faces(loc, conf, landmarks, win: Window, score_threshold: float = SCORE_THRESHOLD):
    """One window's candidates in pixels of the whole photo, tile rules applied: boxes, scores,
    landmarks and the rank NMS orders them by."""
    boxes, scores, lmk = _decode(loc, conf, landmarks, win.shape[0], win.shape[1], score_threshold)
    if len(boxes) and win.max_face < math.inf:
        x1, y1, x2, y2 = boxes.T
        ok = np.minimum(x2 - x1, y2 - y1) <= win.max_face
        left, top, right, bottom = win.inner
        m = win.margin
        if left:
            ok &= x1 >= m
        if top:
            ok &= y1 >= m
        if right:
            ok &= x2 <= win.w - m
        if bottom:
            ok &= y2 <= win.h - m
        boxes, scores, lmk = boxes[ok], scores[ok], lmk[ok]
    offset = np.array([win.x0, win.y0], np.float32)
    boxes = (boxes + np.tile(offset, 2)) / win.scale
    lmk = (lmk + offset) / win.scale
    rank = scores
    if win.letterbox:
        # a face the letterbox sees well (twice the detector's floor) keeps the letterbox's box
        # and landmarks, as every photo had them before the plan: finer windows only add faces
        rank = scores + (np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * win.scale
                         >= 2 * DETECTOR_MIN_FACE)
    return boxes, scores, lmk, rank


def merge(per_window, width: int, height: int, score_threshold: float = SCORE_THRESHOLD,
          min_face_size: int = 0, max_faces: int = 0):
    """Every window's candidates of one photo -> its faces (one NMS), largest first."""
    parts = [p for p in per_window if len(p[0])]
    if not parts:
        return _empty()
    boxes = np.concatenate([p[0] for p in parts])
    scores = np.concatenate([p[1] for p in parts])
    lmk = np.concatenate([p[2] for p in parts])
    # one window (the single pass): plain scores, exactly as before the plan existed
    rank = np.concatenate([p[3] if len(p) > 3 and len(per_window) > 1 else p[1] for p in parts])
    return finish(boxes, scores, lmk, width, height, score_threshold, NMS_IOU, min_face_size, max_faces, rank)
