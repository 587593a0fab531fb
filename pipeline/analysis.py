"""One photo from bytes to aligned faces, around whatever runs the detector: face_pipeline sends
the batches to Triton, the in-process reference to onnxruntime, through this same code.

    photo = open_photo(data, min_face_size=..., max_faces=...)    # phase 1: reduced decode, letterbox
    todo = [photo, ...]
    while todo:
        for batch, owners in detector_batches(todo, max_batch):
            collect(owners, *run_detector(batch))
        todo = next_pass(todo)          # phase 2 for the photos phase 1 cannot answer for
    boxes, scores, landmarks, chips = faces(photo)                   # original pixels

The two phases and their rule are described in pipeline/detect.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from pipeline.align import face_chips
from pipeline.contract import DETECTOR_SIZE
from pipeline.decode import decode_reduced
from pipeline.detect import (MIN_FACE_SIZE, SCORE_THRESHOLD, TILE, Window, coarse_pass_settles,
                             first_reduction, merge, plan, reduction, window_faces, window_inputs)
from pipeline.limits import DecodeLimits


@dataclass
class Photo:
    data: bytes
    rgb: np.ndarray  # decoded, possibly reduced: the detector and the aligner work on this
    fx: float  # original pixels per decoded pixel
    fy: float
    windows: list[Window]  # the detector inputs of the current phase
    min_face_size: int  # filter, original pixels (0: none)
    max_faces: int  # 0: all
    target: float = math.inf  # smallest face (original px) the plan covers; inf: the letterbox only
    limits: DecodeLimits = DecodeLimits()
    size_: int = DETECTOR_SIZE  # detector input side
    tile: int = TILE
    second: bool = False  # phase 2 may still follow
    reduced: int = 1  # the JPEG decode reduction asked for this image (1: full size)
    passes: int = 1  # detector phases planned so far (1 or 2)
    single_pass: bool = False  # asked for phase 1 only
    error: BaseException | None = None  # phase 2 failed for this photo alone
    # candidates of every window run so far: boxes, scores, landmarks, rank, in ORIGINAL pixels
    candidates: list = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """Width, height of the upright photo at full size."""
        h, w = self.rgb.shape[:2]
        return round(w * self.fx), round(h * self.fy)

    def restart(self) -> None:
        """Back to phase 1 on the image held now (a failed batch is retried photo by photo)."""
        h, w = self.rgb.shape[:2]
        self.candidates.clear()
        self.windows = plan(w, h, math.inf, self.size_, self.tile)
        self.second = (not self.single_pass and math.isfinite(self.target)
                       and len(plan(w, h, self.target / self.fx, self.size_, self.tile)) > 1)
        self.passes, self.error = 1, None


def open_photo(data: bytes, limits: DecodeLimits = DecodeLimits(), min_face_size: int = 0, max_faces: int = 0,
               promise: int = MIN_FACE_SIZE, size: int = DETECTOR_SIZE, tile: int = TILE,
               single_pass: bool = False) -> Photo:
    """Decode for phase 1 and plan it. The detection covers faces down to `promise` pixels (the
    service's documented minimum) or to the request's `min_face_size` when that is larger: a
    larger minimum lets a JPEG be decoded smaller and the detector see less of it. `promise` 0:
    the one 480 px letterbox pass of a full-size decode whatever the photo's size, as before the
    plan existed (faces narrower than about 1/20 of the long side are missed). `single_pass`:
    phase 1 and nothing else (the same reach as `promise` 0 at the cost of phase 1: the reduced
    decode); faces it finds near the letterbox's floor get chips from that reduced decode."""
    caps = limits.kwargs()
    if promise <= 0 and min_face_size <= 0 and not single_pass:
        rgb = decode_reduced(data, **caps)[0]
        h, w = rgb.shape[:2]
        return Photo(data, rgb, 1.0, 1.0, plan(w, h, math.inf, size, tile), min_face_size, max_faces,
                     limits=limits, size_=size, tile=tile)
    target = max(promise, min_face_size) or MIN_FACE_SIZE  # single_pass with promise 0
    asked = {"k": 1, "second": False}

    def phase1(w: int, h: int) -> int:
        full = plan(w, h, target, size, tile)
        # the letterbox alone covers the promise: decode for the promise, no phase 2
        asked["second"] = not (len(full) == 1 and full[0].letterbox) and not single_pass
        k = reduction(w, h, target, size)
        asked["k"] = max(first_reduction(w, h, size), k) if asked["second"] or single_pass else k
        return asked["k"]

    rgb, fx, fy = decode_reduced(data, reduction=phase1, **caps)
    h, w = rgb.shape[:2]
    return Photo(data, rgb, fx, fy, plan(w, h, math.inf, size, tile), min_face_size, max_faces,
                 target=target, limits=limits, size_=size, tile=tile,
                 second=asked["second"], reduced=asked["k"] if (fx, fy) != (1.0, 1.0) else 1,
                 single_pass=single_pass)


def next_pass(photos: list[Photo], score_threshold: float = SCORE_THRESHOLD) -> list[Photo]:
    """After a phase: the photos that need phase 2, re-decoded if the promise needs more pixels and
    planned with the windows the letterbox did not cover. A photo whose re-decode fails keeps the
    exception in `error` (faces() raises it) and drops out; the others go on."""
    todo = []
    for photo in photos:
        if not photo.second:
            continue
        photo.second = False
        width, height = photo.size
        boxes = merge(photo.candidates, width, height, score_threshold)[0]
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        if coarse_pass_settles(sides, photo.size_ / max(width, height)):
            continue
        try:
            k = reduction(width, height, photo.target, photo.size_)
            if k < photo.reduced:
                photo.rgb, photo.fx, photo.fy = decode_reduced(photo.data, reduction=lambda w, h: k,
                                                               **photo.limits.kwargs())
                photo.reduced = k
        except Exception as exc:  # noqa: BLE001 - e.g. MemoryError: this photo only
            photo.error = exc
            continue
        h, w = photo.rgb.shape[:2]
        photo.windows = [win for win in plan(w, h, photo.target / photo.fx, photo.size_, photo.tile)
                         if not win.letterbox]
        photo.passes = 2
        if photo.windows:
            todo.append(photo)
    return todo


def detector_batches(photos: list[Photo], max_batch: int) -> Iterator[tuple[np.ndarray, list]]:
    """(uint8 [n, H, W, 3], [(photo, window), ...]): the current phase's windows of every photo
    grouped by shape, at most `max_batch` to an array, built as they are consumed (a 40 MP
    photo's tiles are not all held at once)."""
    pending: dict[tuple[int, int], list] = {}
    for photo in photos:
        for win, x in window_inputs(photo.rgb, photo.windows):
            group = pending.setdefault(win.shape, [])
            group.append((photo, win, x))
            if len(group) == max_batch:
                yield np.stack([g[2] for g in group]), [(g[0], g[1]) for g in group]
                group.clear()
    for group in pending.values():
        if group:
            yield np.stack([g[2] for g in group]), [(g[0], g[1]) for g in group]


def collect(owners: list, loc: np.ndarray, conf: np.ndarray, landmarks: np.ndarray,
            score_threshold: float = SCORE_THRESHOLD) -> None:
    """Each window's candidates, kept in original pixels (phase 2 may decode the photo anew)."""
    for k, (photo, win) in enumerate(owners):
        boxes, scores, lmk, rank = window_faces(loc[k], conf[k], landmarks[k], win, score_threshold)
        if photo.fx != 1.0 or photo.fy != 1.0:
            f = np.array([photo.fx, photo.fy], np.float32)
            boxes, lmk = boxes * np.tile(f, 2), lmk * f
        photo.candidates.append((boxes, scores, lmk, rank))


def detect(photos: list[Photo], max_batch: int, run: Callable, score_threshold: float = SCORE_THRESHOLD) -> None:
    """Both phases with a synchronous detector `run(batch) -> (loc, conf, landmarks)`."""
    todo = photos
    while todo:
        for batch, owners in detector_batches(todo, max_batch):
            collect(owners, *run(batch), score_threshold)
        todo = next_pass(todo, score_threshold)


def faces(photo: Photo, score_threshold: float = SCORE_THRESHOLD):
    """(boxes x1y1x2y2, scores, landmarks [K,5,2]) in original pixels, largest first, and the
    aligned chips, cut from the decoded image."""
    if photo.error is not None:
        raise photo.error
    width, height = photo.size
    boxes, scores, lmk = merge(photo.candidates, width, height, score_threshold,
                               min_face_size=photo.min_face_size, max_faces=photo.max_faces)
    if photo.fx != 1.0 or photo.fy != 1.0:
        chips = face_chips(photo.rgb, lmk / np.array([photo.fx, photo.fy], np.float32))
    else:
        chips = face_chips(photo.rgb, lmk)
    return boxes, scores, lmk, chips
