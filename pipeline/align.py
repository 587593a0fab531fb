"""5-point similarity alignment onto the face canvas that face_multitask expects."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.contract import ARCFACE_TEMPLATE, CHIP_OFFSET, CHIP_SIZE

TEMPLATE = np.asarray(ARCFACE_TEMPLATE, np.float32) + CHIP_OFFSET


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping src points onto dst, as a 2x3 matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s ** 2).sum() / len(src)
    scale = (sig * sign).sum() / max(var, 1e-12)
    m = np.zeros((2, 3), np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def _chip(rgb: np.ndarray, lmk: np.ndarray) -> np.ndarray:
    m = _similarity(lmk.astype(np.float64), TEMPLATE.astype(np.float64))
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    img, offset = rgb, np.zeros(2)
    if scale < 0.5:
        # a large face shrinks a lot: pyramid-down just the face region first so the chip is
        # anti-aliased (as dlib does for the age/gender models) without blurring the photo
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [CHIP_SIZE, 0, 1], [0, CHIP_SIZE, 1], [CHIP_SIZE, CHIP_SIZE, 1]], float)
        pts = corners @ inv.T
        h, w = rgb.shape[:2]
        x0, y0 = np.floor(pts.min(0)).astype(int).clip(0, [w - 1, h - 1])
        x1, y1 = np.ceil(pts.max(0)).astype(int).clip([x0 + 1, y0 + 1], [w, h])
        img, offset = rgb[y0:y1, x0:x1], np.array([x0, y0], float)
        m = m.copy()
        m[:, 2] += m[:, :2] @ offset
        while scale < 0.5 and min(img.shape[:2]) >= 4:
            img = cv2.pyrDown(img)
            m[:, :2] *= 2
            scale *= 2
    return cv2.warpAffine(img, m, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def face_chips(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """uint8 [K, CHIP_SIZE, CHIP_SIZE, 3] RGB canvases, one per face."""
    if len(landmarks) == 0:
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    return np.stack([_chip(rgb, lm.reshape(5, 2)) for lm in landmarks])
