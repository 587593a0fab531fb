"""One photo from bytes to aligned faces, around whatever runs the detector: face_pipeline sends
the batches to Triton, the in-process reference to onnxruntime, through this same code.

    photo = open_photo(data, min_face_size=..., max_faces=...)    # decode at the size we need
    for batch, owners in detector_batches([photo, ...], max_batch):
        collect(owners, *run_detector(batch))
    boxes, scores, landmarks, chips = faces(photo)                   # original pixels
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from pipeline.align import face_chips
from pipeline.contract import DETECTOR_SIZE
from pipeline.decode import decode_reduced
from pipeline.detect import (MIN_FACE_SIZE, SCORE_THRESHOLD, TILE, Window, merge, plan, reduction,
                             window_faces, window_inputs)
from pipeline.limits import DecodeLimits


@dataclass
class Photo:
    rgb: np.ndarray  # decoded, possibly reduced: the detector and the aligner work on this
    fx: float  # original pixels per decoded pixel
    fy: float
    windows: list[Window]
    min_face_size: int  # filter, original pixels (0: none)
    max_faces: int  # 0: all
    candidates: list = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """Width, height of the upright photo at full size."""
        h, w = self.rgb.shape[:2]
        return round(w * self.fx), round(h * self.fy)


def open_photo(data: bytes, limits: DecodeLimits = DecodeLimits(), min_face_size: int = 0, max_faces: int = 0,
               promise: int = MIN_FACE_SIZE, size: int = DETECTOR_SIZE, tile: int = TILE) -> Photo:
    """Decode and plan. The detection covers faces down to `promise` pixels (the service's
    documented minimum) or to the request's `min_face_size` when that is larger: a larger minimum
    lets a JPEG be decoded smaller and the detector see less of it. `promise` 0: the one 480 px
    letterbox pass whatever the photo's size, as before the plan existed (faces narrower than
    about 1/20 of the long side are missed)."""
    caps = limits.kwargs()
    if promise <= 0 and min_face_size <= 0:
        rgb = decode_reduced(data, **caps)[0]
        h, w = rgb.shape[:2]
        return Photo(rgb, 1.0, 1.0, plan(w, h, math.inf, size, tile), min_face_size, max_faces)
    target = max(promise, min_face_size)
    rgb, fx, fy = decode_reduced(data, reduction=lambda w, h: reduction(w, h, target, size), **caps)
    h, w = rgb.shape[:2]
    return Photo(rgb, fx, fy, plan(w, h, target / fx, size, tile), min_face_size, max_faces)


def detector_batches(photos: list[Photo], max_batch: int) -> Iterator[tuple[np.ndarray, list]]:
    """(uint8 [n, H, W, 3], [(photo, window), ...]): the windows of every photo grouped by shape,
    at most `max_batch` to an array, built as they are consumed (a 40 MP photo's tiles are not
    all held at once)."""
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
    for k, (photo, win) in enumerate(owners):
        photo.candidates.append(window_faces(loc[k], conf[k], landmarks[k], win, score_threshold))


def faces(photo: Photo, score_threshold: float = SCORE_THRESHOLD):
    """(boxes x1y1x2y2, scores, landmarks [K,5,2]) in original pixels, largest first, and the
    aligned chips, cut from the decoded image."""
    h, w = photo.rgb.shape[:2]
    boxes, scores, lmk = merge(photo.candidates, w, h, score_threshold,
                               min_face_size=photo.min_face_size / max(photo.fx, photo.fy),
                               max_faces=photo.max_faces)
    chips = face_chips(photo.rgb, lmk)
    if photo.fx != 1.0 or photo.fy != 1.0:
        f = np.array([photo.fx, photo.fy], np.float32)
        boxes, lmk = boxes * np.tile(f, 2), lmk * f
    return boxes, scores, lmk, chips
