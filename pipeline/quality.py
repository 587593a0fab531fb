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
    2-D points: about right up to ~45 degrees, and saturating beyond (profile faces read ~60-90)."""
    p = np.asarray(landmarks, np.float64).reshape(5, 2)
    d = p[1] - p[0]
    roll = math.degrees(math.atan2(d[1], d[0]))
    # undo the roll, then read the nose position between the eyes and between eyes and mouth
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    q = (p - p[0]) @ np.array([[c, s], [-s, c]])
    eye_w = max(q[1, 0], 1e-6)
    eye_y, mouth_y = q[:2, 1].mean(), q[3:, 1].mean()
    fx = q[2, 0] / eye_w
    fy = (q[2, 1] - eye_y) / max(mouth_y - eye_y, 1e-6)
    yaw = math.degrees(math.asin(float(np.clip(2 * (fx - _YAW0), -1, 1))))
    pitch = math.degrees(math.asin(float(np.clip(2 * (fy - _PITCH0), -1, 1))))
    return yaw, pitch, roll


def sharpness(chip: np.ndarray) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(chip[_INNER, _INNER]), cv2.COLOR_RGB2GRAY)
    # int16 holds the 3x3 Laplacian of uint8 exactly and is several times faster than float32
    _, sd = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))
    return float(sd[0, 0]) ** 2


def assess(chip: np.ndarray, landmarks: np.ndarray, box, score: float) -> Quality:
    yaw, pitch, roll = pose(landmarks)
    sharp = sharpness(chip)
    size = int(round(min(float(box[2]) - float(box[0]), float(box[3]) - float(box[1]))))
    scores = {
        "sharpness": min(1.0, sharp / SHARPNESS_REF),
        "pose": max(0.0, 1.0 - max(abs(yaw), abs(pitch)) / POSE_LIMIT),
        "face_size": float(np.clip((size - SIZE_FLOOR) / (SIZE_REF - SIZE_FLOOR), 0.0, 1.0)),
        "detection_score": float(np.clip(score, 0.0, 1.0)),
    }
    overall = float(np.prod(list(scores.values())))
    return Quality(sharp, yaw, pitch, roll, size, float(score), scores, overall)
