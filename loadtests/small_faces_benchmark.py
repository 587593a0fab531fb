"""What finding small faces costs (`make bench`, after loadtests.benchmark).

Two sets of photos, one run, the same machine:
  - one-face photos (../shared/data/age_gender and verification: 21 photos of one person) as they
    are and scaled to 720p, 1080p and 12 MP: before (the single 480 px pass of a full-size decode,
    promise 0) beside after (the default: the two-phase 24 px plan), in process and through
    Triton at concurrency 16 (a second Triton, published with min_face_size 0, is the before);
  - large group photos built by export.group_photos (known faces, 16-200 px, 1080p to 40 MP)
    with the default settings: in process, Triton at concurrency 4, and OpenCV's YuNet + SFace
    peer at the photo's full resolution (its demo setting, the one that finds small faces) and
    at a long side of 640.
Images/s and faces/s for each; faces found per photo against the faces pasted in.

    python -m loadtests.small_faces_benchmark [--seconds 20] [--out docs/benchmark]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from core.settings import PROJECT_ROOT
from loadtests.benchmark import (DATA, _closed_loop, inprocess_pool, pipeline_call, pipeline_inputs,
                                 published_models, run_peer, summarise)
from pipeline import contract as C
from pipeline.detect import MIN_FACE_SIZE
from tools.triton_local import batching_ratio, inference_counts, serving


def one_face_photos(data: Path = DATA) -> list[Path]:
    seen, out = set(), []
    for p in sorted((data / "age_gender" / "images").glob("*")) + sorted((data / "verification" / "images").rglob("*.*")):
        if p.name not in seen:  # some photos are in both folders
            seen.add(p.name)
            out.append(p)
    return out


def group_photos(data: Path, folder: Path, light: bool = False) -> list[tuple[Path, int]]:
    """Large group photos written as JPEG (quality 90) into `folder`: (path, faces pasted in)."""
    from export import group_photos as g

    sources, backgrounds = g.load_sources(data), g.load_backgrounds(data)
    rng = np.random.default_rng(19)
    mixed = [16, 20, 24, 32, 48, 64, 96, 128, 200]
    photos = [
        g.scattered(sources, backgrounds, 1920, 1080, mixed, 40, rng, "team_1080p"),
        g.scattered(sources, backgrounds, 4000, 3000, mixed, 60, rng, "class_12mp"),
        g.grid(sources, backgrounds, 4000, 3000, 32, 12, 8, rng, "rows_96x32px_12mp"),
        g.scattered(sources, backgrounds, 7300, 5475, mixed, 80, rng, "crowd_40mp"),
    ]
    out = []
    for p in photos[:1] if light else photos:
        path = folder / f"{p.name}.jpg"
        path.write_bytes(p.jpeg)
        out.append((path, len(p.boxes)))
    return out


def inprocess(det: Path, mt: Path, photos: list[Path], seconds: float, promise: int, procs: int = 2) -> dict:
    res = inprocess_pool(det, mt, photos, seconds, procs, promise)
    wall = max(r[2] for r in res)  # the last image in flight at the deadline finishes too
    return summarise([x for r in res for x in r[0]], wall, sum(r[1] for r in res)) | {"procs": procs}


def peer(photos: list[Path], seconds: float, max_side: int, peers: Path, procs: int = 2) -> dict | None:
    return run_peer("peer_opencv_zoo.py", peers / "opencv" / "bin" / "python", photos, seconds, procs,
                    extra=("--max-side", str(max_side)), slack=6)


def one_face_sets(data: Path, folder: Path, light: bool = False) -> dict[str, list[Path]]:
    """The one-face photos per size class of loadtests.photo_sets: as they are, and scaled to
    720p, 1080p and 12 MP (JPEG q90, written once under `folder`)."""
    from loadtests import photo_sets

    import cv2

    singles = one_face_photos(data)[:3] if light else one_face_photos(data)
    sets: dict[str, list[Path]] = {}
    for name, pixels in photo_sets.SIZE_CLASSES.items():
        if pixels is None:
            sets[name] = singles
            continue
        (folder / name).mkdir(parents=True, exist_ok=True)
        sets[name] = []
        for src in singles:
            dst = folder / name / f"{src.stem}.jpg"
            if not dst.exists():
                img = cv2.imread(str(src), cv2.IMREAD_COLOR)
                ok, enc = cv2.imencode(".jpg", photo_sets.scale_to(img, pixels),
                                       [cv2.IMWRITE_JPEG_QUALITY, photo_sets.JPEG_QUALITY])
                dst.write_bytes(enc.tobytes())
            sets[name].append(dst)
    return sets


async def triton(grpc_url: str, datas: list[bytes], concurrency: int, seconds: float) -> dict:
    """Closed loop through face_pipeline with the server's own settings (no request option)."""
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(grpc_url)
    try:
        return await _closed_loop(pipeline_call(client, aio), datas, concurrency, seconds)
    finally:
        await client.close()


async def _found(grpc_url: str, photos: list[Path]) -> dict[str, int]:
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(grpc_url)
    try:
        out = {}
        for p in photos:
            r = await client.infer(C.PIPELINE, pipeline_inputs(aio, p.read_bytes()),
                                   outputs=[aio.InferRequestedOutput(C.PL_BOXES)], client_timeout=600)
            out[p.name] = len(r.as_numpy(C.PL_BOXES)[0])
        return out
    finally:
        await client.close()


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _ratio(a: dict | None, b: dict | None, key: str = "images_per_s") -> float | None:
    return round(a[key] / b[key], 3) if a and b and a.get(key) and b.get(key) else None


def run(seconds: float, out: Path, grpc_url: str, metrics_url: str, det: Path, mt: Path,
        peers: Path | None = Path("/tmp/peers"), data: Path = DATA, group_seconds: float | None = None,
        light: bool = False, before_grpc_url: str | None = None) -> dict:
    """One-face photos per size class, before (the single 480 px pass of a full-size decode, what
    promise 0 still runs: in process, and through `before_grpc_url`, a Triton published with
    --min-face-size 0) and after (the default two-phase plan), side by side; then the group photos
    with the default settings beside YuNet. `light`: three one-face photos, the originals and 12 MP
    classes, one 1080p group photo (the driver's own test)."""
    group_seconds = group_seconds or seconds * 3  # a 40 MP photo takes seconds: a longer window
    result: dict = {"seconds": seconds, "group_seconds": group_seconds, "load_before": load(), "one_face": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sets = one_face_sets(data, Path(tmp), light)
        if light:
            sets = {k: v for k, v in sets.items() if k in ("original", "12MP")}
        before = inference_counts(metrics_url)
        for name, paths in sets.items():
            print(f"[small faces] one-face photos, {name}: {len(paths)}, load {load()}", flush=True)
            datas = [p.read_bytes() for p in paths]
            r = {"photos": len(paths), "load": load(),
                 "inprocess_before": inprocess(det, mt, paths, seconds, promise=0),
                 "inprocess_after": inprocess(det, mt, paths, seconds, promise=MIN_FACE_SIZE)}
            if before_grpc_url:
                r["triton_before"] = asyncio.run(triton(before_grpc_url, datas, 16, seconds))
            r["triton_after"] = asyncio.run(triton(grpc_url, datas, 16, seconds))
            result["one_face"][name] = r
        groups = group_photos(data, Path(tmp), light)
        paths = [p for p, _ in groups]
        print(f"[small faces] {len(groups)} group photos, load {load()}", flush=True)
        g = {"photos": {p.name: n for p, n in groups}, "load": load()}
        g["inprocess"] = inprocess(det, mt, paths, group_seconds, promise=MIN_FACE_SIZE)
        g["triton"] = asyncio.run(triton(grpc_url, [p.read_bytes() for p in paths], 4, group_seconds))
        g["found_by_us"] = asyncio.run(_found(grpc_url, paths))
        if peers is not None:
            for name, side in (("yunet_full_resolution", 0), ("yunet_max_side_640", 640)):
                print(f"[small faces] peer {name}, load {load()}", flush=True)
                r = peer(paths, group_seconds, side, peers)
                if r and "faces_per_image" in r:
                    r["found"] = {Path(k).name: v for k, v in r.pop("faces_per_image").items()}
                g[f"peer_{name}"] = r
        result["group"] = g
    result["batching"] = batching_ratio(before, inference_counts(metrics_url))
    result["load_after"] = load()
    ratios = {}
    for name, r in result["one_face"].items():
        ratios[f"one-face {name}, in process: after / before (images/s)"] = _ratio(r["inprocess_after"], r["inprocess_before"])
        ratios[f"one-face {name}, Triton c16: after / before (images/s)"] = _ratio(r["triton_after"], r.get("triton_before"))
    for name in ("yunet_full_resolution", "yunet_max_side_640"):
        p = result["group"].get(f"peer_{name}")
        for key in ("images_per_s", "faces_per_s"):
            ratios[f"group photos: our Triton c4 / {name} ({key.replace('_per_s', '')}/s)"] = _ratio(
                result["group"]["triton"], p, key)
    result["ratios"] = {k: v for k, v in ratios.items() if v is not None}
    out.mkdir(parents=True, exist_ok=True)
    (out / "small_faces.json").write_text(json.dumps(result, indent=2))
    (out / "small_faces.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict) -> str:
    lines = [f"Load average before / after: {r['load_before']} / {r['load_after']} (2 cores)", "",
             "| what | load at start | images/s | faces/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    labels = (("inprocess_before", "in process, before (single 480 pass, full decode)"),
              ("inprocess_after", "in process, after (two-phase default)"),
              ("triton_before", "Triton c16, before (min_face_size 0)"),
              ("triton_after", "Triton c16, after (default)"))
    for name, one in r["one_face"].items():
        for key, what in labels:
            x = one.get(key)
            if x and "images_per_s" in x:
                lines.append(f"| one-face {name}: {what} | {one['load']} | {x['images_per_s']} | {x.get('faces_per_s')} "
                             f"| {x.get('p50_ms')} | {x.get('p99_ms')} |")
    g = r.get("group", {})
    for key, what in (("inprocess", "group photos: in process, default (2 procs)"),
                      ("triton", "group photos: Triton c4, default"),
                      ("peer_yunet_full_resolution", "group photos: peer YuNet+SFace, full resolution (2 procs)"),
                      ("peer_yunet_max_side_640", "group photos: peer YuNet+SFace, long side 640 (2 procs)")):
        if g.get(key) and "images_per_s" in g[key]:
            x = g[key]
            lines.append(f"| {what} | {g['load']} | {x['images_per_s']} | {x.get('faces_per_s')} | {x.get('p50_ms')} | {x.get('p99_ms')} |")
    if g:
        lines += ["", "| group photo | faces pasted | found by us | YuNet full res | YuNet 640 |", "|---|---|---|---|---|"]
        for name, n in g["photos"].items():
            full = (g.get("peer_yunet_full_resolution") or {}).get("found", {}).get(name)
            small = (g.get("peer_yunet_max_side_640") or {}).get("found", {}).get(name)
            lines.append(f"| {name} | {n} | {g['found_by_us'].get(name)} | {full} | {small} |")
    lines.append("")
    lines += [f"- {k}: **{v}**" for k, v in r["ratios"].items()]
    lines.append(f"- Triton batching ratio (inferences per execution): {r['batching']}")
    return "\n".join(lines) + "\n"


def baseline_repository(repo: Path, dst: Path) -> Path:
    """A copy of `repo` (model files linked) whose face_pipeline has min_face_size 0: the single
    480 px pass of a full-size decode every photo got before the two-phase default."""
    shutil.copytree(repo, dst, copy_function=os.symlink, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = dst / C.PIPELINE / "config.pbtxt"
    text = cfg.read_text()
    cfg.unlink()
    cfg.write_text(re.sub(r'(key: "min_face_size"\s*value \{\s*string_value: )"\d+"', r'\1"0"', text))
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.small_faces_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "benchmark")
    p.add_argument("--peers", type=Path, default=Path("/tmp/peers"))
    p.add_argument("--no-peers", action="store_true")
    args = p.parse_args(argv)
    repo, det, mt = published_models()
    # the default repository (after) and a copy with the plan off (before), side by side
    with tempfile.TemporaryDirectory() as work, \
            serving(repo, Path(work) / "after") as server, \
            serving(baseline_repository(repo, Path(work) / "before_repo"), Path(work) / "before") as before:
        run(args.seconds, args.out, server.grpc_url, server.metrics_url, det, mt,
            peers=None if args.no_peers else args.peers, before_grpc_url=before.grpc_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
