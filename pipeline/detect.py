"""RetinaFace pre- and post-processing: letterbox, priors, box decoding, NMS.

Every image is letterboxed to one fixed square so that concurrent requests have equal
shapes and Triton's dynamic batcher can merge them.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from pipeline.contract import DET_MEAN_BGR, DETECTOR_SIZE

STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
SCORE_THRESHOLD = 0.6  # chosen on ../shared/data with `python -m export evaluate` (README)
NMS_IOU = 0.4


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


@lru_cache(maxsize=8)
def priors(size: int) -> np.ndarray:
    """Anchor centres and sizes (cx, cy, w, h) in pixels, in the network's output order."""
    rows = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        n = -(-size // step)
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cx = ((xs + 0.5) * step).reshape(-1, 1)
        cy = ((ys + 0.5) * step).reshape(-1, 1)
        for s in sizes:
            rows.append(np.stack([cx, cy, np.full_like(cx, s), np.full_like(cx, s)], axis=-1))
    # output order is row, column, then anchor size within each cell
    per_step, start = [], 0
    for step, sizes in zip(STEPS, MIN_SIZES):
        n = -(-size // step)
        block = np.concatenate(rows[start:start + len(sizes)], axis=1)  # [cells, sizes, 4]
        per_step.append(block.reshape(n * n * len(sizes), 4))
        start += len(sizes)
    return np.concatenate(per_step).astype(np.float32)


def postprocess(loc: np.ndarray, conf: np.ndarray, landmarks: np.ndarray, size: int, scale: float,
                width: int, height: int, score_threshold: float = SCORE_THRESHOLD,
                nms_iou: float = NMS_IOU, min_face_size: int = 0, max_faces: int = 0):
    """Decode one image's outputs -> boxes x1y1x2y2, scores, landmarks [K,5,2], original pixels.

    Faces come largest first; `max_faces` keeps the largest, `min_face_size` drops faces
    whose shorter box side is smaller (original pixels).
    """
    scores = conf[:, 1]
    keep = np.flatnonzero(scores > score_threshold)
    if keep.size == 0:
        return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                np.zeros((0, 5, 2), np.float32))
    p = priors(size)[keep]
    d = loc[keep]
    v0, v1 = VARIANCES
    centre = p[:, :2] + d[:, :2] * v0 * p[:, 2:]
    wh = p[:, 2:] * np.exp(d[:, 2:] * v1)
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1) / scale
    lmk = (p[:, None, :2] + landmarks[keep].reshape(-1, 5, 2) * v0 * p[:, None, 2:]) / scale
    s = scores[keep]

    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), s.tolist(), score_threshold, nms_iou)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    boxes, s, lmk = boxes[idx], s[idx], lmk[idx]

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
