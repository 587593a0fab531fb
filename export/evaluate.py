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
from api.settings import Settings
from export import metrics

LOWER_IS_BETTER = {"age_mae", "false_detections_per_no_face_image", "wrong_person_rate",
                   "known_reported_unknown_rate", "missed_face_images"}
GATED = ("verification_accuracy", "verification_accuracy_at_threshold", "gender_accuracy",
         "detection_recall", "age_mae", "wrong_person_rate")


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
        correct += ("male" if face.p_male >= 0.5 else "female") == r["gender"]
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
    for p in paths:
        found = [f.box.tolist() for f in got[root / p].faces]
        tp += metrics.match_boxes(truth[p], found)
        n_true += len(truth[p])
        n_found += len(found)
        missed_images += bool(truth[p]) and not found
    nf_root = data / "no_face"
    nf_paths = [nf_root / r["path"] for r in _rows(nf_root / "no_face.csv", limit)]
    nf = await run.analyze_all(nf_paths, "no-face")
    false_dets = sum(len(a.faces) for a in nf.values())
    return {"detection_recall": tp / max(n_true, 1), "detection_precision": tp / max(n_found, 1),
            "detection_faces": n_true, "false_detections_per_no_face_image": false_dets / max(len(nf_paths), 1),
            "no_face_images": len(nf_paths), "missed_face_images": missed_images}


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


def plots(out: Path, ver: dict, age_errors: list[float]) -> list[str]:
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
    plt.close("all")
    return files


async def evaluate(settings: Settings, data: Path, out: Path, limit: int | None = None) -> dict:
    client = InferenceClient(settings.triton)
    try:
        run = Runner(client)
        ver, ver_raw = await verification(run, data, limit, settings.matching.threshold)
        ag, age_errors = await age_gender(run, data, limit)
        det = await detection(run, data, limit)
        ident = await identification(run, data, settings.matching.threshold, limit)
        models = await client.model_status()
    finally:
        await client.close()
    result = {**ver, **ag, **det, **ident, "data": str(data), "limit": limit,
              "models": {k: v.get("mlflow_version") for k, v in models.items()}}
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = plots(out, ver_raw, age_errors)
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
