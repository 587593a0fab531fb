"""RetinaFace geometry without a model: priors, box decoding, the one NMS over a photo's
candidates, clipping, size filter, order and cap."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import detect as D


def test_priors_count_order_and_geometry():
    p = D.priors(64)
    # (64/8)^2 + (64/16)^2 + (64/32)^2 cells, two anchor sizes each
    assert p.shape == ((8 * 8 + 4 * 4 + 2 * 2) * 2, 4) and p.dtype == np.float32
    # first cell of stride 8: centre (4, 4), sizes 16 then 32, before the next cell
    np.testing.assert_array_equal(p[:3], [[4, 4, 16, 16], [4, 4, 32, 32], [12, 4, 16, 16]])
    # row-major within a level: the second row starts after the 8 cells of the first
    np.testing.assert_array_equal(p[16], [4, 12, 16, 16])
    # the last level: stride 32, sizes 256 and 512
    np.testing.assert_array_equal(p[-1], [48, 48, 512, 512])


def test_priors_of_a_non_square_input_round_up_partial_cells():
    p = D.priors(40, 72)  # 5 x 9 cells at stride 8, 3 x 5 at 16, 2 x 3 at 32
    assert len(p) == (5 * 9 + 3 * 5 + 2 * 3) * 2
    assert p[: 5 * 9 * 2, 0].max() == (8 + 0.5) * 8 and p[: 5 * 9 * 2, 1].max() == (4 + 0.5) * 8


def outputs(size: int, faces: dict[int, tuple[float, np.ndarray, np.ndarray]]):
    """Detector outputs for a `size` input: zero offsets and background everywhere except the
    given prior rows (score, loc deltas [4], landmark deltas [10])."""
    n = len(D.priors(size))
    loc, conf, lmk = np.zeros((n, 4), np.float32), np.zeros((n, 2), np.float32), np.zeros((n, 10), np.float32)
    conf[:, 0] = 1.0
    for row, (score, dl, dk) in faces.items():
        conf[row] = (1 - score, score)
        loc[row], lmk[row] = dl, dk
    return loc, conf, lmk


def test_decoding_puts_a_zero_offset_face_on_its_prior():
    p = D.priors(64)
    row = 40  # some stride-8 prior
    loc, conf, lmk = outputs(64, {row: (0.9, np.zeros(4), np.zeros(10))})
    boxes, scores, landmarks = D.postprocess(loc, conf, lmk, size=64, scale=1.0, width=64, height=64)
    cx, cy, w, h = p[row]
    np.testing.assert_allclose(boxes, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], atol=1e-5)
    assert scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(landmarks, np.tile([cx, cy], (1, 5, 1)), atol=1e-5)


def test_decoding_applies_the_variances_and_the_letterbox_scale():
    p = D.priors(64)
    row = 100  # a stride-16 prior of size 64: its box stays inside the 64 px input
    cx, cy, w, h = p[row]
    dl = np.array([1.0, -1.0, np.log(0.5) / 0.2, 0.0])  # centre +/- 0.1 w, width halved
    loc, conf, lmk = outputs(64, {row: (0.8, dl, np.ones(10))})
    boxes, _, landmarks = D.postprocess(loc, conf, lmk, size=64, scale=0.5, width=1000, height=1000)
    ex, ey, ew = cx + 0.1 * w, cy - 0.1 * h, w * 0.5
    expect = np.array([ex - ew / 2, ey - h / 2, ex + ew / 2, ey + h / 2]) / 0.5
    np.testing.assert_allclose(boxes[0], expect, rtol=1e-5)
    np.testing.assert_allclose(landmarks[0, 0], [(cx + 0.1 * w) / 0.5, (cy + 0.1 * h) / 0.5], rtol=1e-5)


def test_scores_at_or_below_the_threshold_are_dropped():
    loc, conf, lmk = outputs(64, {40: (D.SCORE_THRESHOLD, np.zeros(4), np.zeros(10))})
    boxes, scores, landmarks = D.postprocess(loc, conf, lmk, 64, 1.0, 64, 64)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and landmarks.shape == (0, 5, 2)


def box(x1, y1, x2, y2):
    return [x1, y1, x2, y2]


def run_finish(boxes, scores, **kw):
    """finish() on these candidates: boxes, scores and which candidates survived, in order
    (each candidate's index rides along in its first landmark)."""
    b = np.asarray(boxes, np.float32)
    lmk = np.zeros((len(b), 5, 2), np.float32)
    lmk[:, 0, 0] = np.arange(len(b))
    out = D.finish(b.copy(), np.asarray(scores, np.float32), lmk, kw.pop("width", 1000),
                   kw.pop("height", 1000), **kw)
    return out[0], out[1], out[2][:, 0, 0].astype(int).tolist()


def test_nms_keeps_the_best_of_overlapping_boxes_and_both_of_apart_ones():
    boxes, scores, kept = run_finish([box(0, 0, 100, 100), box(5, 5, 105, 105), box(300, 300, 350, 350)],
                                     [0.8, 0.95, 0.7])
    # the two overlapping (IoU 0.82 > 0.4) leave the 0.95 one; the apart box stays
    assert kept == [1, 2] and scores.tolist() == pytest.approx([0.95, 0.7])
    np.testing.assert_array_equal(boxes[0], [5, 5, 105, 105])


def test_nms_keeps_boxes_overlapping_less_than_its_iou():
    # IoU of these two is 1/3 < NMS_IOU: both are faces
    _, _, kept = run_finish([box(0, 0, 100, 100), box(50, 0, 150, 100)], [0.9, 0.8])
    assert sorted(kept) == [0, 1]


def test_rank_orders_nms_instead_of_the_score():
    _, scores, kept = run_finish([box(0, 0, 100, 100), box(5, 5, 105, 105)], [0.9, 0.7],
                                 rank=np.array([0.9, 1.7], np.float32))
    assert kept == [1] and scores.tolist() == pytest.approx([0.7])


def test_boxes_are_clipped_filtered_by_size_sorted_largest_first_and_capped():
    raw = [box(-10, -10, 40, 40), box(100, 100, 300, 300), box(500, 500, 520, 520), box(900, 900, 1100, 1100)]
    boxes, scores, kept = run_finish(raw, [0.9, 0.8, 0.99, 0.7], width=1000, height=1000)
    np.testing.assert_array_equal(boxes, [[100, 100, 300, 300], [900, 900, 1000, 1000],
                                          [0, 0, 40, 40], [500, 500, 520, 520]])
    assert kept == [1, 3, 0, 2] and scores.tolist() == pytest.approx([0.8, 0.7, 0.9, 0.99])
    # the size filter: the 20 px box goes, the clipped 40 px one stays
    assert run_finish(raw, [0.9, 0.8, 0.99, 0.7], min_face_size=30)[2] == [1, 3, 0]
    assert run_finish(raw, [0.9, 0.8, 0.99, 0.7], max_faces=2)[2] == [1, 3]


def test_no_candidates_give_empty_arrays_of_the_right_shapes():
    boxes, scores, lmk = D.merge([], 100, 100)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and lmk.shape == (0, 5, 2)


def test_merge_of_windows_is_one_nms_over_all_candidates():
    a = (np.array([box(0, 0, 100, 100)], np.float32), np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32),
         np.array([0.9], np.float32))
    b = (np.array([box(2, 2, 102, 102), box(400, 400, 450, 450)], np.float32), np.array([0.95, 0.8], np.float32),
         np.zeros((2, 5, 2), np.float32), np.array([0.95, 0.8], np.float32))
    _, scores, _ = D.merge([a, b], 1000, 1000)
    assert scores.tolist() == pytest.approx([0.95, 0.8])


def test_letterbox_scales_the_long_side_and_pads_with_the_mean():
    rgb = np.full((100, 200, 3), 7, np.uint8)
    canvas, scale = D.letterbox(rgb, 64)
    assert canvas.shape == (64, 64, 3) and scale == pytest.approx(0.32)
    assert (canvas[:32] == 7).all() and (canvas[32:] == D.PAD_RGB).all()
