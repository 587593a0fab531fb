import numpy as np

from export import metrics


def test_iou_and_greedy_box_matching():
    assert metrics.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert abs(metrics.iou((0, 0, 10, 10), (5, 0, 15, 10)) - 50 / 150) < 1e-9
    truth = [(0, 0, 10, 10), (20, 20, 30, 30)]
    # one detection overlapping both truths may count once only
    assert metrics.match_boxes(truth, [(0, 0, 10, 10)]) == 1
    assert metrics.match_boxes(truth, [(0, 0, 10, 10), (21, 21, 30, 30)]) == 2
    assert metrics.match_boxes(truth, [(50, 50, 60, 60)]) == 0


def test_verification_protocol_on_separable_and_overlapping_scores():
    same = np.array([True] * 50 + [False] * 50)
    scores = np.concatenate([np.linspace(0.5, 0.9, 50), np.linspace(0.0, 0.3, 50)])
    r = metrics.kfold_verification(scores, same)
    assert r["accuracy"] == 1.0 and 0.3 < r["best_threshold_all"] < 0.5
    scores[0] = 0.1  # one same-person pair below every impostor
    r = metrics.kfold_verification(scores, same)
    assert abs(r["accuracy"] - 0.99) < 1e-9
    t = metrics.tar_at_far(scores, same, far=1e-3)
    assert t["far_resolution"] == 1 / 50 and abs(t["tar"] - 49 / 50) < 1e-9
    fpr, tpr = metrics.roc_curve(scores, same)
    assert fpr[0] == 0 and tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
