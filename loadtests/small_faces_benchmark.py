"""What finding small faces costs (`make bench`, after loadtests.benchmark).

Two sets of photos, one run, the same machine:
  - one-face photos (../shared/data/age_gender and verification: 21 photos of one person): our
    pipeline in process with the detection plan (24 px promise) beside the single 480 px pass
    every photo got before it (`min_face_size` 0), then through Triton at concurrency 16;
  - large group photos built by export.group_photos (known faces, 16-200 px, 1080p to 40 MP):
    in process, Triton at concurrency 4, and OpenCV's YuNet + SFace peer at the photo's full
    resolution (its demo setting, the one that finds small faces) and at a long side of 640.
Images/s and faces/s for each; faces found per photo against the faces pasted in.

    python -m loadtests.small_faces_benchmark [--seconds 20] [--out docs/benchmark]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from core.settings import PROJECT_ROOT
from loadtests.benchmark import (DATA, _closed_loop, inprocess_pool, pipeline_call, pipeline_inputs,
                                 published_models, run_peer, summarise)
from pipeline import contract as C
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


PLAN_REQUEST = 12  # MIN_FACE_SIZE that asks face_pipeline for the small-face plan (as make eval)


async def triton(grpc_url: str, datas: list[bytes], concurrency: int, seconds: float, min_face_size: int) -> dict:
    """Closed loop through face_pipeline, asking for the plan (min_face_size > 0) or not."""
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(grpc_url)
    try:
        return await _closed_loop(pipeline_call(client, aio, min_face_size), datas, concurrency, seconds)
    finally:
        await client.close()


async def _found(grpc_url: str, photos: list[Path]) -> dict[str, int]:
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(grpc_url)
    try:
        out = {}
        for p in photos:
            r = await client.infer(C.PIPELINE, pipeline_inputs(aio, p.read_bytes(), PLAN_REQUEST),
                                   outputs=[aio.InferRequestedOutput(C.PL_BOXES)], client_timeout=600)
            out[p.name] = len(r.as_numpy(C.PL_BOXES)[0])
        return out
    finally:
        await client.close()


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run(seconds: float, out: Path, grpc_url: str, metrics_url: str, det: Path, mt: Path,
        peers: Path | None = Path("/tmp/peers"), data: Path = DATA, group_seconds: float | None = None,
        light: bool = False) -> dict:
    """`light`: three one-face photos and one 1080p group photo (the driver's own test)."""
    group_seconds = group_seconds or seconds * 3  # a 40 MP photo takes seconds: a longer window
    result: dict = {"seconds": seconds, "group_seconds": group_seconds, "load_before": load()}
    singles = one_face_photos(data)[:3] if light else one_face_photos(data)
    datas = [p.read_bytes() for p in singles]
    print(f"[small faces] {len(singles)} one-face photos, load {load()}", flush=True)
    result["one_face"] = {
        "photos": len(singles),
        "inprocess_single_480_pass": inprocess(det, mt, singles, seconds, promise=0),
        "inprocess_plan_24px": inprocess(det, mt, singles, seconds, promise=24),
    }
    before = inference_counts(metrics_url)
    result["one_face"]["triton_single_480_pass"] = asyncio.run(triton(grpc_url, datas, 16, seconds, 0))
    result["one_face"]["triton_plan_24px"] = asyncio.run(triton(grpc_url, datas, 16, seconds, PLAN_REQUEST))
    with tempfile.TemporaryDirectory() as tmp:
        groups = group_photos(data, Path(tmp), light)
        paths = [p for p, _ in groups]
        print(f"[small faces] {len(groups)} group photos, load {load()}", flush=True)
        g = {"photos": {p.name: n for p, n in groups}}
        g["inprocess_plan_24px"] = inprocess(det, mt, paths, group_seconds, promise=24)
        g["triton_plan_24px"] = asyncio.run(triton(grpc_url, [p.read_bytes() for p in paths], 4,
                                                   group_seconds, PLAN_REQUEST))
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
    one = result["one_face"]
    result["ratios"] = {
        "one-face photos, in process: plan / single 480 pass": round(
            one["inprocess_plan_24px"]["images_per_s"] / one["inprocess_single_480_pass"]["images_per_s"], 3),
        "one-face photos, Triton c16: plan / single 480 pass": round(
            one["triton_plan_24px"]["images_per_s"] / one["triton_single_480_pass"]["images_per_s"], 3),
    }
    for name in ("yunet_full_resolution", "yunet_max_side_640"):
        p = result["group"].get(f"peer_{name}")
        if p and p.get("images_per_s"):
            result["ratios"][f"group photos: our Triton c4 / {name} (images/s)"] = round(
                result["group"]["triton_plan_24px"]["images_per_s"] / p["images_per_s"], 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "small_faces.json").write_text(json.dumps(result, indent=2))
    (out / "small_faces.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict) -> str:
    rows = []
    one, g = r["one_face"], r.get("group", {})
    for key, what in (("inprocess_single_480_pass", "one-face photos: in process, single 480 px pass (before)"),
                      ("inprocess_plan_24px", "one-face photos: in process, 24 px plan"),
                      ("triton_single_480_pass", "one-face photos: Triton c16, single 480 px pass (the default)"),
                      ("triton_plan_24px", "one-face photos: Triton c16, 24 px plan (MIN_FACE_SIZE 12)")):
        rows.append((what, one[key]))
    for key, what in (("inprocess_plan_24px", "group photos: in process, 24 px plan (2 procs)"),
                      ("triton_plan_24px", "group photos: Triton c4, 24 px plan"),
                      ("peer_yunet_full_resolution", "group photos: peer YuNet+SFace, full resolution (2 procs)"),
                      ("peer_yunet_max_side_640", "group photos: peer YuNet+SFace, long side 640 (2 procs)")):
        if g.get(key) and "images_per_s" in g[key]:
            rows.append((what, g[key]))
    lines = [f"Load average before / after: {r['load_before']} / {r['load_after']} (2 cores)", "",
             "| what | images/s | faces/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {x['images_per_s']} | {x.get('faces_per_s')} | {x.get('p50_ms')} | {x.get('p99_ms')} |"
              for n, x in rows]
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.small_faces_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "benchmark")
    p.add_argument("--peers", type=Path, default=Path("/tmp/peers"))
    p.add_argument("--no-peers", action="store_true")
    args = p.parse_args(argv)
    repo, det, mt = published_models()
    with tempfile.TemporaryDirectory() as work, serving(repo, Path(work)) as server:
        run(args.seconds, args.out, server.grpc_url, server.metrics_url, det, mt,
            peers=None if args.no_peers else args.peers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
