"""Accuracy of the deployed pipeline on labelled photos, through Triton and the API's own
client and gallery code (api.inference, api.matching), so it measures what users get.

Data layout: ../shared/data/MANIFEST.md (verification/pairs.csv + identities.csv,
age_gender/labels.csv, detection/boxes.csv + no_face.csv, no_face/no_face.csv).
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from api.inference import Analysis, InferenceClient
from api.matching import Gallery
from core.settings import PROJECT_ROOT, Settings
from export import metrics

LOWER_IS_BETTER = {"age_mae", "false_detections_per_no_face_image", "wrong_person_rate",
                   "known_reported_unknown_rate", "missed_face_images", "gender_ece", "gender_ece_clean",
                   "detection_ece"}
# Labels of our own for faces of ../shared/data (path relative to it, box, gender), by eye:
# 23 adults, and 4 children whose gender is clear (children are where gender models fail).
GENDER_BY_EYE = (PROJECT_ROOT / "tests" / "data" / "gender_by_eye.csv",
                 PROJECT_ROOT / "tests" / "data" / "gender_by_eye_children.csv")
# Conditions the calibration faces are also seen under: every labelled face is clean and
# well lit, and 36 faces with 2 errors cannot show how confidence behaves when the model is
# unsure. Held-out photos are smaller, blurrier, darker, more compressed.
CONDITIONS = ("clean", "small", "blur", "jpeg", "gray", "dark")
GATED = ("verification_accuracy", "verification_accuracy_at_threshold", "gender_accuracy",
         "detection_recall", "age_mae", "wrong_person_rate", "small_faces_recall_at_promise")


def _rows(path: Path, limit: int | None = None) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[:limit] if limit else rows


class Runner:
    """Analyse each distinct photo once, a few at a time, with a progress bar."""

    def __init__(self, client: InferenceClient, concurrency: int = 4):
        self.client, self.sem, self.cache = client, asyncio.Semaphore(concurrency), {}

    async def analyze_all(self, paths: list[Path], desc: str) -> dict[Path, Analysis]:
        todo = [p for p in dict.fromkeys(paths) if p not in self.cache]
        bar = tqdm(total=len(todo), desc=desc, file=sys.stderr, leave=False)

        async def one(p: Path):
            async with self.sem:
                self.cache[p] = await self.client.analyze(p.read_bytes())
                bar.update()

        await asyncio.gather(*(one(p) for p in todo))
        bar.close()
        return {p: self.cache[p] for p in paths}


    async def analyze_bytes(self, photos: dict[str, bytes], desc: str, min_face_size: int = 0) -> dict[str, Analysis]:
        bar = tqdm(total=len(photos), desc=desc, file=sys.stderr, leave=False)
        out: dict[str, Analysis] = {}

        async def one(name: str, data: bytes):
            async with self.sem:
                out[name] = await self.client.analyze(data, min_face_size=min_face_size)
                bar.update()

        await asyncio.gather(*(one(n, d) for n, d in photos.items()))
        bar.close()
        return out


async def verification(run: Runner, data: Path, limit: int | None, threshold: float) -> tuple[dict, dict]:
    root = data / "verification"
    pairs = _rows(root / "pairs.csv", limit)
    got = await run.analyze_all([root / r[k] for r in pairs for k in ("img1", "img2")], "verification")
    scores, same, no_face = [], [], 0
    for r in pairs:
        a, b = got[root / r["img1"]], got[root / r["img2"]]
        if not a.faces or not b.faces:
            no_face += 1
            scores.append(-1.0)  # no face: predicted "different", as the peers count it
        else:
            scores.append(float(a.faces[0].embedding @ b.faces[0].embedding))
        same.append(r["same"] == "1")
    s, y = np.array(scores), np.array(same)
    cv = metrics.kfold_verification(s, y)
    tar = metrics.tar_at_far(s, y, 1e-3)
    out = {"verification_pairs": len(pairs), "verification_accuracy": cv["accuracy"],
           "verification_accuracy_std": cv["accuracy_std"], "verification_threshold_cv": cv["threshold"],
           "verification_best_threshold": cv["best_threshold_all"],
           "verification_same_min": float(s[y].min()) if y.any() else None,
           "verification_different_max": float(s[~y].max()) if (~y).any() else None,
           "tar_at_far_1e-3": tar["tar"], "far_resolution": tar["far_resolution"],
           "verification_pairs_without_face": no_face,
           # what users get: accuracy at the deployed matching threshold, not a fitted one
           "verification_accuracy_at_threshold": metrics.accuracy_at(s, y, threshold)}
    return out, {"scores": s, "same": y}


async def age_gender(run: Runner, data: Path, limit: int | None) -> tuple[dict, list[float]]:
    root = data / "age_gender"
    rows = _rows(root / "labels.csv", limit)
    got = await run.analyze_all([root / r["path"] for r in rows], "age/gender")
    errors, correct, counted = [], 0, 0
    for r in rows:
        a = got[root / r["path"]]
        if not a.faces:
            continue
        face = a.faces[0]
        counted += 1
        correct += face.gender == r["gender"]
        if r["age"]:
            errors.append(face.age - float(r["age"]))
    return {"gender_accuracy": correct / max(counted, 1), "gender_photos": counted,
            "age_mae": float(np.mean(np.abs(errors))) if errors else None,
            "age_photos": len(errors)}, errors


async def detection(run: Runner, data: Path, limit: int | None) -> dict:
    root = data / "detection"
    truth: dict[str, list] = defaultdict(list)
    for r in _rows(root / "boxes.csv"):
        x, y, w, h = (float(r[k]) for k in ("x", "y", "width", "height"))
        truth[r["path"]].append((x, y, x + w, y + h))
    for r in _rows(root / "no_face.csv"):
        truth.setdefault(r["path"], [])
    paths = sorted(truth)[:limit] if limit else sorted(truth)
    got = await run.analyze_all([root / p for p in paths], "detection")
    tp = n_true = n_found = missed_images = 0
    scores, true_face = [], []  # every reported detection: its confidence, and whether it is a face
    for p in paths:
        faces = got[root / p].faces
        found = [f.box.tolist() for f in faces]
        hits = metrics.matched_detections(truth[p], found)
        tp += len(hits)
        n_true += len(truth[p])
        n_found += len(found)
        missed_images += bool(truth[p]) and not found
        scores += [f.score for f in faces]
        true_face += [j in hits for j in range(len(faces))]
    nf_root = data / "no_face"
    nf_paths = [nf_root / r["path"] for r in _rows(nf_root / "no_face.csv", limit)]
    nf = await run.analyze_all(nf_paths, "no-face")
    false_dets = sum(len(a.faces) for a in nf.values())
    for a in nf.values():
        scores += [f.score for f in a.faces]
        true_face += [False] * len(a.faces)
    # the detector's confidence read as P(a true face); judged on what we report (>= threshold)
    sc, tf = np.array(scores), np.array(true_face, bool)
    return {"detection_ece": metrics.ece(sc, tf) if len(sc) else None,
            "detection_mean_confidence": float(sc.mean()) if len(sc) else None,
            "detection_reliability": metrics.reliability(sc, tf) if len(sc) else [],
            "detection_recall": tp / max(n_true, 1), "detection_precision": tp / max(n_found, 1),
            "detection_faces": n_true, "false_detections_per_no_face_image": false_dets / max(len(nf_paths), 1),
            "no_face_images": len(nf_paths), "missed_face_images": missed_images}


def degrade(bgr: np.ndarray, condition: str) -> np.ndarray:
    """A labelled photo as a harder camera would have taken it (`CONDITIONS`)."""
    import cv2

    if condition == "small":  # a third of the size: faces of 20-60 px, as in group photos
        h, w = bgr.shape[:2]
        return cv2.resize(bgr, (max(w // 3, 1), max(h // 3, 1)), interpolation=cv2.INTER_AREA)
    if condition == "blur":
        return cv2.GaussianBlur(bgr, (0, 0), 2.5)
    if condition == "jpeg":
        return cv2.imdecode(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 15])[1], cv2.IMREAD_COLOR)
    if condition == "gray":
        return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    if condition == "dark":
        return (bgr.astype(np.float32) * 0.35).astype(np.uint8)
    return bgr


def gender_faces(data: Path, limit: int | None = None) -> list[tuple[Path, tuple | None, str]]:
    """(photo, box or None for the largest face, gender) of every face with a gender label."""
    faces = [(data / "age_gender" / r["path"], None, r["gender"])
             for r in _rows(data / "age_gender" / "labels.csv", limit)]
    for labels in GENDER_BY_EYE:
        for r in _rows(labels, limit):
            x, y, w, h = (float(r[k]) for k in ("x", "y", "width", "height"))
            faces.append((data / r["path"], (x, y, x + w, y + h), r["gender"]))
    return faces


async def gender_calibration(run: Runner, data: Path, work: Path, limit: int | None = None,
                             conditions: tuple[str, ...] = CONDITIONS) -> tuple[dict, dict]:
    """How far gender_confidence can be trusted: every labelled face under each condition,
    the served P(male) against the label. Reports ECE and a reliability table, the temperature
    (logit scale) that fits best, and its out-of-sample effect by grouped cross-validation."""
    import cv2

    faces = gender_faces(data, limit)
    work.mkdir(parents=True, exist_ok=True)
    photos: dict[tuple[Path, str], tuple[Path, float]] = {}
    for src in dict.fromkeys(f[0] for f in faces):
        bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
        for c in conditions:
            img = degrade(bgr, c)
            dst = work / f"{src.stem}.{c}.png"
            cv2.imwrite(str(dst), img)
            photos[src, c] = (dst, img.shape[0] / bgr.shape[0])
    got = await run.analyze_all([v[0] for v in photos.values()], "calibration")
    p_male, is_male, group, cond = [], [], [], []
    for k, (src, box, gender) in enumerate(faces):
        for c in conditions:
            path, scale = photos[src, c]
            found = got[path].faces
            if not found:
                continue
            boxes = [f.box / scale for f in found]
            if box is None:
                j = int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
            else:
                j = int(np.argmax([metrics.iou(box, b) for b in boxes]))
                if metrics.iou(box, boxes[j]) < 0.3:
                    continue  # this face was not found under this condition
            p_male.append(found[j].p_male)
            is_male.append(gender == "male")
            group.append(k)
            cond.append(c)
    p, y, g, cond = np.array(p_male), np.array(is_male, bool), np.array(group), np.array(cond)
    clean = cond == "clean"
    cv = metrics.cv_logit_scale(p, y, g)
    out = {"gender_calibration_faces": len(faces), "gender_calibration_samples": len(p),
           "gender_calibration_accuracy": float(((p >= 0.5) == y).mean()),
           "gender_calibration_accuracy_clean": float(((p[clean] >= 0.5) == y[clean]).mean()),
           "gender_mean_confidence": float(np.maximum(p, 1 - p).mean()),
           "gender_ece": metrics.ece(p, y), "gender_ece_clean": metrics.ece(p[clean], y[clean]),
           "gender_nll": metrics.nll(p, y),
           # what a further temperature would do: fitted on everything, and out of sample
           "gender_logit_scale_fit": metrics.fit_logit_scale(p, y),
           "gender_ece_cv_rescaled": cv["ece"], "gender_nll_cv_rescaled": cv["nll"],
           "gender_logit_scale_cv_folds": cv["scales"],
           "gender_reliability": metrics.reliability(p, y),
           "gender_ece_by_condition": {c: round(metrics.ece(p[cond == c], y[cond == c]), 4)
                                       for c in conditions if (cond == c).any()}}
    return out, {"p": p, "y": y}


async def small_faces(run: Runner, data: Path, light: bool = False) -> dict:
    """Recall and precision by face size on group photos we build from ../shared/data faces
    (export.group_photos): known boxes, 16 to 200 px faces, 720p to 40 MP, 1 to 300 faces."""
    from export import group_photos
    from pipeline.detect import MIN_FACE_SIZE

    photos = group_photos.evaluation_set(data, light=light)
    # the service's default (the two-phase plan for the 24 px promise, no request option): no
    # minimum, so the buckets under the promise show too
    got = await run.analyze_bytes({p.name: p.jpeg for p in photos}, "small faces")
    t_sizes, f_sizes, pairs, per_photo = [], [], [], {}
    for p in photos:
        found = np.array([f.box for f in got[p.name].faces], np.float32).reshape(-1, 4)
        matched = metrics.match_pairs(p.boxes.tolist(), found.tolist())
        pairs += [(i + len(t_sizes), j + len(f_sizes)) for i, j in matched]
        t_sizes += p.sizes.tolist()
        f_sizes += np.minimum(found[:, 2] - found[:, 0], found[:, 3] - found[:, 1]).tolist()
        h, w = p.rgb.shape[:2]
        per_photo[p.name] = {"size": f"{w}x{h}", "faces": len(p.boxes), "found": len(matched),
                             "detections": len(found)}
    buckets = metrics.by_size(t_sizes, f_sizes, pairs, group_photos.SIZE_EDGES)
    promised = [i for i, s in enumerate(t_sizes) if s >= MIN_FACE_SIZE]
    found_promised = len({i for i, _ in pairs} & set(promised))
    out = {"small_faces_photos": len(photos), "small_faces_faces": len(t_sizes),
           "small_faces_min_face_size": MIN_FACE_SIZE,
           "small_faces_recall_at_promise": found_promised / max(len(promised), 1),
           "small_faces_recall": len(pairs) / max(len(t_sizes), 1),
           "small_faces_precision": len(pairs) / max(len(f_sizes), 1),
           "small_faces_false_detections": len(f_sizes) - len(pairs),
           "small_faces_by_size": buckets, "small_faces_per_photo": per_photo}
    for name, b in buckets.items():
        if b["recall"] is not None:
            out[f"small_faces_recall_{name}px"] = b["recall"]
    return out


async def identification(run: Runner, data: Path, threshold: float, limit: int | None) -> dict:
    """Open-set identification with the API's gallery logic.

    Pass 1: one photo registered per identity that has several; every other photo is
    matched like /analyze does (an unmatched face becomes a new unknown person).
    Pass 2: nobody registered: do the photos of one person keep one unknown id?
    """
    root = data / "verification"
    rows = _rows(root / "identities.csv", limit)
    got = await run.analyze_all([root / r["path"] for r in rows], "identification")
    by_id: dict[str, list[Path]] = defaultdict(list)
    for r in rows:
        if got[root / r["path"]].faces:
            by_id[r["identity"]].append(root / r["path"])
    emb = {p: got[p].faces[0].embedding for ps in by_id.values() for p in ps}

    def stream(register: bool):
        g = Gallery()
        owner: dict[str, str] = {}
        probes = []
        for ident, ps in by_id.items():
            if register and len(ps) > 1:
                g.upsert(f"known:{ident}", "known", emb[ps[0]])
                owner[f"known:{ident}"] = ident
                probes += [(ident, p) for p in ps[1:]]
            else:
                probes += [(ident, p) for p in ps]
        results = []
        for n, (ident, p) in enumerate(probes):
            m = g.search(emb[p][None], threshold)[0]
            if m is None:
                pid = f"unknown:{n}"
                g.upsert(pid, "unknown", emb[p])
                owner[pid] = ident
                results.append((ident, "new", pid))
            else:
                results.append((ident, m.kind, m.person_id))
        return results, owner

    res, owner = stream(register=True)
    registered = {owner[k] for k in owner if k.startswith("known:")}
    known_probes = [r for r in res if r[0] in registered]
    correct = sum(1 for i, kind, pid in known_probes if kind == "known" and owner[pid] == i)
    as_unknown = sum(1 for i, kind, _ in known_probes if kind == "new")
    wrong = sum(1 for i, kind, pid in res if kind != "new" and owner[pid] != i)
    res2, _ = stream(register=False)
    stable, repeats = 0, 0
    first_id: dict[str, str] = {}
    for ident, _, pid in res2:
        if ident in first_id:
            repeats += 1
            stable += pid == first_id[ident]
        else:
            first_id[ident] = pid
    return {"identification_probes": len(res), "correct_known_rate": correct / max(len(known_probes), 1),
            "known_reported_unknown_rate": as_unknown / max(len(known_probes), 1),
            "wrong_person_rate": wrong / max(len(res), 1),
            "unknown_id_stability": stable / repeats if repeats else None,
            "identification_threshold": threshold}


def reliability_plot(ax, table: list[dict], label: str) -> None:
    pts = [(b["confidence"], b["accuracy"], b["count"]) for b in table if b["count"]]
    if pts:
        x, y, n = zip(*pts)
        ax.plot(x, y, "o-", label=label)
        for xi, yi, ni in pts:
            ax.annotate(str(ni), (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)


def plots(out: Path, ver: dict, age_errors: list[float], calibration: dict | None = None,
          by_size: dict | None = None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fpr, tpr = metrics.roc_curve(ver["scores"], ver["same"])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title("Verification ROC")
    fig.savefig(out / "roc.png", dpi=100)
    files.append(str(out / "roc.png"))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist(age_errors, bins=20)
    ax.set_xlabel("predicted - true age (years)")
    ax.set_title("Age error")
    fig.savefig(out / "age_error.png", dpi=100)
    files.append(str(out / "age_error.png"))
    if calibration:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0.5, 1], [0.5, 1], "k:", label="perfectly calibrated")
        for name, (table, value) in calibration.items():
            reliability_plot(ax, table, f"{name} (ECE {value:.3f})")
        ax.set_xlabel("confidence (of the reported class)")
        ax.set_ylabel("accuracy")
        ax.set_title("Reliability (numbers: faces per bin)")
        ax.legend(fontsize=8)
        fig.savefig(out / "reliability.png", dpi=100)
        files.append(str(out / "reliability.png"))
    if by_size:
        names = [k for k, v in by_size.items() if v["recall"] is not None]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(names, [by_size[k]["recall"] for k in names], marker="o", label="recall")
        ax.plot(names, [by_size[k]["precision"] or 0 for k in names], marker="s", label="precision")
        ax.set_xlabel("face width (px of the photo)")
        ax.set_ylim(0, 1.02)
        ax.legend()
        ax.set_title("Small faces: group photos built from ../shared/data")
        fig.savefig(out / "small_faces.png", dpi=100)
        files.append(str(out / "small_faces.png"))
    plt.close("all")
    return files


async def evaluate(settings: Settings, data: Path, out: Path, limit: int | None = None) -> dict:
    # a 40 MP crowd photo takes seconds on a CPU; the API's deadline is for interactive requests
    client = InferenceClient(settings.triton.model_copy(update={"timeout_s": max(settings.triton.timeout_s, 600)}))
    try:
        run = Runner(client)
        ver, ver_raw = await verification(run, data, limit, settings.matching.threshold)
        ag, age_errors = await age_gender(run, data, limit)
        det = await detection(run, data, limit)
        ident = await identification(run, data, settings.matching.threshold, limit)
        cal, _ = await gender_calibration(run, data, out / "calibration_photos", limit)
        small = await small_faces(Runner(client, concurrency=2), data, light=limit is not None)
        models = await client.model_status()
    finally:
        await client.close()
    result = {**ver, **ag, **det, **ident, **cal, **small, "data": str(data), "limit": limit,
              "models": {k: v.get("mlflow_version") for k, v in models.items()}}
    out.mkdir(parents=True, exist_ok=True)
    curves = {"gender_confidence": (cal["gender_reliability"], cal["gender_ece"])}
    if det["detection_reliability"]:
        curves["detection confidence"] = (det["detection_reliability"], det["detection_ece"])
    result["plots"] = plots(out, ver_raw, age_errors, curves, small["small_faces_by_size"])
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    return result


def gate(candidate: dict[str, float], production: dict[str, float], margin: float,
         age_margin: float = 0.5) -> list[str]:
    """Reasons to refuse a promotion: gated metrics worse than production by more than the
    margin (rates) or age_margin (years of age MAE)."""
    reasons = []
    for key in GATED:
        if key not in production:
            continue
        if key not in candidate:
            reasons.append(f"{key}: not evaluated for the candidate")
            continue
        c, p = candidate[key], production[key]
        worse = (c - p) if key in LOWER_IS_BETTER else (p - c)
        allowed = age_margin if key == "age_mae" else margin
        if worse > allowed:
            reasons.append(f"{key}: {c:.4f} vs production {p:.4f} (allowed margin {allowed:.3f})")
    return reasons


def numeric(result: dict) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
