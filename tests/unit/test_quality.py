"""Face quality measures (pipeline/quality.py) on known geometry and real pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.contract import ARCFACE_TEMPLATE, CHIP_SIZE
from pipeline.quality import assess, pose, sharpness

TEMPLATE = np.asarray(ARCFACE_TEMPLATE, np.float64)


def rotated(points: np.ndarray, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = points.mean(0)
    return (points - c) @ r.T + c


def test_a_frontal_template_reads_as_no_rotation():
    yaw, pitch, roll = pose(TEMPLATE * 3 + 100)  # scale and position do not matter
    assert abs(yaw) < 1 and abs(pitch) < 1 and abs(roll) < 0.5  # the template eyes are 0.2 px off level


@pytest.mark.parametrize("tilt", [-30, 15, 40])
def test_roll_is_the_tilt_of_the_eye_line_and_leaves_yaw_and_pitch_alone(tilt):
    yaw, pitch, roll = pose(rotated(TEMPLATE, tilt))
    assert roll == pytest.approx(tilt + pose(TEMPLATE)[2], abs=1e-6)
    assert abs(yaw) < 1 and abs(pitch) < 1


def test_a_nose_towards_one_eye_reads_as_yaw_and_a_lower_nose_as_pitch():
    turned = TEMPLATE.copy()
    turned[2, 0] += 12  # nose towards the right eye
    yaw, pitch, _ = pose(turned)
    assert yaw > 30 and abs(pitch) < 1
    down = TEMPLATE.copy()
    down[2, 1] += 10
    assert pose(down)[1] > 20


def test_blur_lowers_sharpness_and_the_overall_score():
    rng = np.random.default_rng(0)
    chip = rng.integers(0, 255, (CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(chip, (0, 0), 3)
    assert sharpness(blurred) < sharpness(chip) / 20
    box, lmk = np.array([0, 0, 200, 220], np.float32), TEMPLATE * 2
    crisp, soft = assess(chip, lmk, box, 0.99), assess(blurred, lmk, box, 0.99)
    assert crisp.overall > 0.9 and soft.overall < 0.1 and soft.weakest == "sharpness"


def test_small_faces_and_doubtful_detections_score_low():
    chip = np.random.default_rng(1).integers(0, 255, (CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    tiny = assess(chip, TEMPLATE / 5, np.array([10, 10, 30, 32]), 0.99)
    assert tiny.face_size == 20 and tiny.weakest == "face_size" and tiny.overall < 0.1
    doubtful = assess(chip, TEMPLATE * 2, np.array([0, 0, 200, 220]), 0.3)
    assert doubtful.weakest == "detection_score" and doubtful.overall == pytest.approx(0.3, abs=0.02)
    assert 0 <= tiny.overall <= 1 and 0 <= doubtful.overall <= 1
