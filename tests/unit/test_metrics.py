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


def test_calibration_error_on_known_inputs():

    y = np.array([True] * 10)
    # 10 faces at P(male) 0.6, all male: confidence 0.6, accuracy 1.0 -> ECE 0.4
    assert abs(metrics.ece(np.full(10, 0.6), y) - 0.4) < 1e-9
    # female answers count by their own confidence: P(male) 0.2 is 0.8 sure of "female"
    p = np.array([0.8] * 8 + [0.2] * 2)
    table = metrics.reliability(p, y)
    assert [b["count"] for b in table] == [0, 0, 0, 10, 0] and abs(table[3]["accuracy"] - 0.8) < 1e-9
    assert metrics.ece(p, y) < 1e-9  # 80% right at 0.8: calibrated


def test_temperature_fit_recovers_a_known_scale_and_keeps_decisions():

    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, 4000)
    y = rng.random(4000) < 1 / (1 + np.exp(-z))  # labels drawn from the true probabilities
    under = 1 / (1 + np.exp(-z / 2))  # an under-confident model: logits halved
    s = metrics.fit_logit_scale(under, y)
    assert 1.8 < s < 2.2
    fixed = metrics.scale_logit(under, s)
    assert np.array_equal(fixed >= 0.5, under >= 0.5)
    assert metrics.ece(fixed, y) < metrics.ece(under, y)
    cv = metrics.cv_logit_scale(under, y, np.arange(4000) // 10)
    assert cv["ece"] < metrics.ece(under, y) and len(cv["scales"]) == 6
