"""Pure accuracy metrics (numpy only), so that they can be tested on known inputs."""

from __future__ import annotations

import numpy as np


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(truth: list, found: list, threshold: float = 0.5) -> int:
    """Greedy one-to-one matching by IoU: the number of true boxes found."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f, hits = set(), set(), 0
    for v, i, j in pairs:
        if v < threshold:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            hits += 1
    return hits


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((scores > threshold) == same))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the best accuracy; the midpoint of the best gap between scores."""
    s = np.sort(np.unique(scores))
    candidates = np.concatenate([[s[0] - 1e-3], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-3]])
    accs = np.array([accuracy_at(scores, same, t) for t in candidates])
    best = np.flatnonzero(accs == accs.max())
    return float(candidates[best[len(best) // 2]])


def kfold_verification(scores: np.ndarray, same: np.ndarray, folds: int = 10) -> dict:
    """LFW protocol: pick the threshold on 9 folds, measure on the 10th; report mean and std."""
    idx = np.arange(len(scores))
    accs, ths = [], []
    for k in range(folds):
        test = idx % folds == k
        th = best_threshold(scores[~test], same[~test])
        accs.append(accuracy_at(scores[test], same[test], th))
        ths.append(th)
    return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "threshold": float(np.mean(ths)), "best_threshold_all": best_threshold(scores, same)}


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float = 1e-3) -> dict:
    """True accept rate at the threshold that keeps the false accept rate at or below `far`.

    With n impostor pairs the smallest measurable FAR is 1/n; the result says which FAR the
    data could actually resolve.
    """
    neg = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(neg)))
    threshold = neg[allowed] if allowed < len(neg) else -np.inf
    return {"tar": float(np.mean(scores[same] > threshold)), "threshold": float(threshold),
            "far_resolution": 1.0 / max(len(neg), 1)}


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ths = np.sort(np.unique(scores))[::-1]
    tpr = np.array([np.mean(scores[same] >= t) for t in ths])
    fpr = np.array([np.mean(scores[~same] >= t) for t in ths])
    return np.concatenate([[0], fpr, [1]]), np.concatenate([[0], tpr, [1]])
