"""Face quality from what the pipeline already returns: the aligned canvas, the 5 landmarks, the
box and the detection score. No model, a few tens of microseconds per face (measured by
`python -m loadtests.quality_cost`), so the API computes it on the faces Triton sends back
rather than adding work to the pipeline process, which is the busier one.

Each part is scored in [0, 1] and the overall score is their product, so one bad part (a blurred
crop, a profile view, a tiny face, a doubtful detection) is enough to sink it; the weakest part
names the reason when a gate refuses the face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.contract import ARCFACE_TEMPLATE, CHIP_OFFSET

# the ArcFace template (a frontal face): where the nose sits between the eyes (0.503) and between
# the eye line and the mouth line (0.494). A turned or tilted head moves it off these ratios.
_T = np.asarray(ARCFACE_TEMPLATE)
_YAW0 = float((_T[2, 0] - _T[0, 0]) / (_T[1, 0] - _T[0, 0]))
_PITCH0 = float((_T[2, 1] - _T[:2, 1].mean()) / (_T[3:, 1].mean() - _T[:2, 1].mean()))
# the 112 px ArcFace square inside the canvas: the face itself, without the margin
_INNER = slice(CHIP_OFFSET, CHIP_OFFSET + 112)

# references that map each measure to a [0, 1] score (calibrated on ../shared/data, README):
SHARPNESS_REF = 120.0  # Laplacian variance of a crisp aligned face (median of ../shared/data: 333; blurred, sigma 4: 7)
SIZE_REF = 80.0  # px (shorter box side): from here on size no longer limits recognition
SIZE_FLOOR = 16.0  # px: below this a face scores 0 for size
POSE_LIMIT = 90.0  # degrees of yaw or pitch at which the pose score reaches 0 (a full profile)


@dataclass
class Quality:
    sharpness: float  # Laplacian variance of the aligned face (grey, 112 px square)
    yaw: float  # degrees, estimated from the landmarks; + = face turned to its left (our right)
    pitch: float  # degrees, estimated; + = looking down
    roll: float  # degrees: tilt of the eye line
    face_size: int  # px, shorter side of the box in the original image
    detection_score: float
    scores: dict[str, float]  # each part in [0, 1]
    overall: float  # product of the part scores, [0, 1]

    @property
    def weakest(self) -> str:
        return min(self.scores, key=self.scores.get)


def pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from eye L, eye R, nose, mouth L, mouth R. An estimate from
    2-D points: about right up to ~45 degrees, and saturating beyond (profile faces read ~60-90).
    Scalar math on the ten numbers: numpy on 5x2 arrays cost more in call overhead than the math."""
    (x0, y0), (x1, y1), (xn, yn), (xl, yl), (xr, yr) = np.asarray(landmarks, np.float64).reshape(5, 2).tolist()
    roll = math.degrees(math.atan2(y1 - y0, x1 - x0))
    # undo the roll about eye L, then read the nose position between the eyes and between eyes and mouth
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))

    def unrolled(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - x0, y - y0
        return dx * c - dy * s, dx * s + dy * c

    (eye_r, eye_r_y), (nose_x, nose_y) = unrolled(x1, y1), unrolled(xn, yn)
    eye_y = (0.0 + eye_r_y) / 2  # eye L is the origin
    mouth_y = (unrolled(xl, yl)[1] + unrolled(xr, yr)[1]) / 2
    fx = nose_x / max(eye_r, 1e-6)
    fy = (nose_y - eye_y) / max(mouth_y - eye_y, 1e-6)
    yaw = math.degrees(math.asin(_clip(2 * (fx - _YAW0), -1.0, 1.0)))
    pitch = math.degrees(math.asin(_clip(2 * (fy - _PITCH0), -1.0, 1.0)))
    return yaw, pitch, roll


def _clip(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v


def sharpness(chip: np.ndarray) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(chip[_INNER, _INNER]), cv2.COLOR_RGB2GRAY)
    # int16 holds the 3x3 Laplacian of uint8 exactly and is several times faster than float32
    _, sd = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))
    return float(sd[0, 0]) ** 2


def assess(chip: np.ndarray, landmarks: np.ndarray, box, score: float) -> Quality:
    yaw, pitch, roll = pose(landmarks)
    sharp = sharpness(chip)
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    size = int(round(min(x1 - x0, y1 - y0)))
    scores = {
        "sharpness": min(1.0, sharp / SHARPNESS_REF),
        "pose": max(0.0, 1.0 - max(abs(yaw), abs(pitch)) / POSE_LIMIT),
        "face_size": _clip((size - SIZE_FLOOR) / (SIZE_REF - SIZE_FLOOR), 0.0, 1.0),
        "detection_score": _clip(float(score), 0.0, 1.0),
    }
    overall = math.prod(scores.values())
    return Quality(sharp, yaw, pitch, roll, size, float(score), scores, overall)
