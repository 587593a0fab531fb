"""Pure accuracy metrics (numpy only), so that they can be tested on known inputs."""

from __future__ import annotations

import numpy as np


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_pairs(truth: list, found: list, threshold: float = 0.5) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU: (true index, found index) of each match."""
    if not len(truth) or not len(found):
        return []
    t, f = np.asarray(truth, np.float64), np.asarray(found, np.float64)
    iw = (np.minimum(t[:, None, 2], f[None, :, 2]) - np.maximum(t[:, None, 0], f[None, :, 0])).clip(0)
    ih = (np.minimum(t[:, None, 3], f[None, :, 3]) - np.maximum(t[:, None, 1], f[None, :, 1])).clip(0)
    inter = iw * ih
    area_t = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    area_f = (f[:, 2] - f[:, 0]) * (f[:, 3] - f[:, 1])
    ious = inter / np.maximum(area_t[:, None] + area_f[None, :] - inter, 1e-12)
    cand = np.argwhere(ious >= threshold)
    order = np.argsort(-ious[cand[:, 0], cand[:, 1]], kind="stable")
    used_t, used_f, pairs = set(), set(), []
    for i, j in cand[order].tolist():
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            pairs.append((i, j))
    return pairs


def matched_detections(truth: list, found: list, threshold: float = 0.5) -> set[int]:
    """Greedy one-to-one matching by IoU: the indices of the found boxes that match a true one."""
    return {j for _, j in match_pairs(truth, found, threshold)}


def match_boxes(truth: list, found: list, threshold: float = 0.5) -> int:
    """The number of true boxes found (greedy one-to-one matching by IoU)."""
    return len(match_pairs(truth, found, threshold))


def by_size(truth_sizes, found_sizes, pairs, edges) -> dict[str, dict]:
    """Recall and precision per face-size bucket [edges[k], edges[k+1]): a true face counts in
    the bucket of its size; a detection in the bucket of the face it matched, or of its own
    size when it matched none (a false detection)."""
    matched_t = {i for i, _ in pairs}
    matched_f = {j: i for i, j in pairs}
    out = {}
    for lo, hi in zip(edges, edges[1:]):
        in_t = [i for i, s in enumerate(truth_sizes) if lo <= s < hi]
        tp = sum(i in matched_t for i in in_t)
        false = sum(1 for j, s in enumerate(found_sizes) if j not in matched_f and lo <= s < hi)
        out[f"{lo}-{hi}"] = {"faces": len(in_t), "found": tp, "false": false,
                             "recall": tp / len(in_t) if in_t else None,
                             "precision": tp / (tp + false) if tp + false else None}
    return out


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


# -- calibration of a binary probability -----------------------------------------------------
def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 5) -> list[dict]:
    """Reliability table of P(y) = p: the confidence of the predicted class (max(p, 1 - p), so
    0.5..1) in equal-width bins, with each bin's mean confidence, accuracy and count."""
    p, y = np.asarray(p, np.float64), np.asarray(y, bool)
    conf, correct = np.maximum(p, 1 - p), (p >= 0.5) == y
    idx = np.minimum(((conf - 0.5) / 0.5 * bins).astype(int), bins - 1)
    return [{"low": 0.5 + b * 0.5 / bins, "high": 0.5 + (b + 1) * 0.5 / bins, "count": int((idx == b).sum()),
             "confidence": float(conf[idx == b].mean()) if (idx == b).any() else None,
             "accuracy": float(correct[idx == b].mean()) if (idx == b).any() else None}
            for b in range(bins)]


def ece(p: np.ndarray, y: np.ndarray, bins: int = 5) -> float:
    """Expected calibration error: |confidence - accuracy| per bin, weighted by the bin's share.
    Few bins because the labelled sets are small (an empty or 2-face bin is noise)."""
    n = len(p)
    return float(sum(b["count"] / n * abs(b["confidence"] - b["accuracy"])
                     for b in reliability(p, y, bins) if b["count"])) if n else 0.0


def nll(p: np.ndarray, y: np.ndarray) -> float:
    p, y = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7), np.asarray(y, bool)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def fit_logit_scale(p: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling of a binary probability: the factor s (= 1/T) on its logit that
    minimises the negative log-likelihood; s < 1 softens, s > 1 sharpens. The decision
    (p >= 0.5) never changes, so neither does accuracy."""
    z, y = _logit(p), np.asarray(y, bool)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 600))
    losses = [nll(_sigmoid(z * s), y) for s in grid]
    return float(grid[int(np.argmin(losses))])


def scale_logit(p: np.ndarray, s: float) -> np.ndarray:
    return _sigmoid(_logit(p) * s)


def cv_logit_scale(p: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 6) -> dict:
    """Out-of-sample effect of temperature scaling: for each fold of groups (a face and its
    degraded copies are one group, so a face never calibrates itself), fit on the others and
    calibrate the held-out fold; the ECE and NLL of the calibrated held-out probabilities."""
    p, y, groups = np.asarray(p, np.float64), np.asarray(y, bool), np.asarray(groups)
    ids = np.unique(groups)
    fold_of = {g: k % folds for k, g in enumerate(np.random.default_rng(0).permutation(ids))}
    fold = np.array([fold_of[g] for g in groups])
    out, scales = np.zeros_like(p), []
    for k in range(folds):
        test = fold == k
        if not test.any() or test.all():
            continue
        s = fit_logit_scale(p[~test], y[~test])
        scales.append(s)
        out[test] = scale_logit(p[test], s)
    return {"ece": ece(out, y), "nll": nll(out, y), "scales": [round(s, 3) for s in scales]}
