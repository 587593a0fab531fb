"""/analyze before and after a change, side by side in one run, plus what the per-face extras cost.

    python -m loadtests.options_benchmark --base main~3 --seconds 20 --rounds 2

One Triton; two APIs on SQLite: the `--base` git revision (its api/ and pipeline/ extracted with
git archive into a temporary directory) and this working tree. Each round measures every arm
at concurrency 1 and 16 in turn (base, current, current with include=quality, current with
include=landmarks,embedding,crop,quality), so the arms share the machine's load; the ratios
to the base are what to read. Also times pipeline.quality.assess per face on real chips.
Writes docs/benchmark/options.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np

from core.settings import PROJECT_ROOT
from loadtests.benchmark import DATA, _closed_loop, load_average, published_models
from tools.api_process import start_api, stop
from tools.triton_local import TritonServer

ARMS = (("base", None), ("current", None), ("current include=quality", "quality"),
        ("current include=all", "landmarks,embedding,crop,quality"))


def photos(data: Path = DATA) -> list[Path]:
    """The labelled photos with faces, as the main benchmark's originals class uses them."""
    out = sorted((data / "detection" / "images").glob("*.*")) + sorted((data / "verification" / "images").rglob("*.jpg"))
    return [p for p in out if p.suffix.lower() in (".jpg", ".jpeg", ".png")]


def extract(rev: str, into: Path) -> Path:
    # core/ exists from c2060b5 on (settings moved there); older revisions have api/settings.py
    present = set(subprocess.run(["git", "ls-tree", "--name-only", rev], cwd=PROJECT_ROOT, capture_output=True,
                                 text=True, check=True).stdout.split())
    wanted = [d for d in ("api", "core", "pipeline", "db", "face_analytics_client") if d in present]
    blob = subprocess.run(["git", "archive", rev, *wanted], cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


async def measure(url: str, datas: list[bytes], include: str | None, concurrency: int, seconds: float) -> dict:
    import httpx

    params = {"include": include} if include else {}
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=64)) as client:
        async def call(data: bytes) -> int:
            r = await client.post("/analyze", params=params, files={"file": ("photo", data)})
            r.raise_for_status()
            return len(r.json()["faces"])

        return await _closed_loop(call, datas, concurrency, seconds)


def quality_cost(det: Path, mt: Path, paths: list[Path]) -> dict:
    """Microseconds per face of pipeline.quality.assess on the chips of the labelled photos."""
    import cv2

    from pipeline.inprocess import InProcessPipeline
    from pipeline.quality import assess

    cv2.setNumThreads(1)
    pipe = InProcessPipeline(det, mt, threads=1)
    faces, datas = [], [p.read_bytes() for p in paths]
    started = time.perf_counter()
    for data in datas:
        faces += [(f.chip, f.landmarks, f.box, f.score) for f in pipe.analyze(data).faces]
    pipeline_per_face = (time.perf_counter() - started) / len(faces)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        for f in faces:
            assess(*f)
        times.append((time.perf_counter() - t) / len(faces))
    return {"faces": len(faces), "us_per_face_median": round(float(np.median(times)) * 1e6, 1),
            "us_per_face_min": round(float(np.min(times)) * 1e6, 1),
            # the same photos through the whole in-process pipeline, per face, just before
            "pipeline_ms_per_face": round(pipeline_per_face * 1e3, 1),
            "share_of_pipeline": round(float(np.median(times)) / pipeline_per_face, 4)}



@contextlib.contextmanager
def base_and_current(repo: Path, base_rev: str, deadline_s: int = 600):
    """One Triton on `repo` and two APIs against it: `base_rev`'s own code (its api/ and
    pipeline/ first on the path) and this checkout's, each with its own database; yields
    (server, (base process, url), (current process, url)) and stops them all."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = TritonServer.on_free_ports(repo, tmp / "triton").start(240)
        procs = []
        try:
            base = extract(base_rev, tmp / "base")
            procs.append(start_api(server.grpc_url, tmp / "base-data", cwd=base, timeout_s=600,
                                   PYTHONPATH=str(base), TRITON_TIMEOUT_S=str(deadline_s)))
            procs.append(start_api(server.grpc_url, tmp / "cur-data", timeout_s=600,
                                   TRITON_TIMEOUT_S=str(deadline_s)))
            yield server, procs[0], procs[1]
        finally:
            for proc, _ in procs:
                stop(proc)
            server.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.options_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="main", help="git revision to compare with (default main)")
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "benchmark" / "options.json")
    args = p.parse_args(argv)

    repo, det, mt = published_models()
    paths = photos()
    datas = [x.read_bytes() for x in paths]
    result = {"base": args.base, "base_commit": subprocess.run(["git", "rev-parse", args.base], cwd=PROJECT_ROOT,
                                                                capture_output=True, text=True).stdout.strip(),
              "photos": len(paths), "seconds": args.seconds, "rounds": args.rounds,
              "load_before": load_average(), "quality_cost": quality_cost(det, mt, paths)}
    runs: dict[str, dict[str, list[dict]]] = {name: {"c1": [], "c16": []} for name, _ in ARMS}
    with base_and_current(repo, args.base) as (_, (_, base_url), (_, cur_url)):
        for rnd in range(args.rounds):
            for c in (1, 16):
                for name, include in ARMS:
                    url = base_url if name == "base" else cur_url
                    r = asyncio.run(measure(url, datas, include, c, args.seconds))
                    runs[name][f"c{c}"].append(r)
                    print(f"[options] round {rnd + 1} c{c} {name}: {r['images_per_s']} images/s, "
                          f"p50 {r['p50_ms']} ms, errors {r['errors']}", flush=True)
    result["load_after"] = load_average()
    result["runs"] = runs
    summary = {}
    for name in runs:
        for c in ("c1", "c16"):
            rate = sum(r["images_per_s"] for r in runs[name][c]) / len(runs[name][c])
            p50 = float(np.median([r["p50_ms"] for r in runs[name][c]]))
            summary.setdefault(name, {})[c] = {"images_per_s": round(rate, 2), "p50_ms": round(p50, 1)}
    for name in summary:
        for c in ("c1", "c16"):
            summary[name][c]["vs_base"] = round(summary[name][c]["images_per_s"] / summary["base"][c]["images_per_s"], 3)
    result["summary"] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    lines = [f"/analyze, {len(paths)} labelled photos, {args.rounds} rounds x {args.seconds:.0f} s per arm, "
             f"base {args.base} ({result['base_commit'][:8]}); load {result['load_before']} -> {result['load_after']}",
             "", "| arm | c1 images/s | c1 p50 ms | c16 images/s | c16 p50 ms | c1 / base | c16 / base |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['c1']['images_per_s']} | {s['c1']['p50_ms']} | {s['c16']['images_per_s']} | "
                     f"{s['c16']['p50_ms']} | {s['c1']['vs_base']} | {s['c16']['vs_base']} |")
    q = result["quality_cost"]
    lines += ["", f"pipeline.quality.assess: {q['us_per_face_median']} µs per face (median of 20 passes over "
              f"{q['faces']} faces, one thread); the whole in-process pipeline on the same photos: "
              f"{q['pipeline_ms_per_face']} ms per face; share {q['share_of_pipeline']:.1%}"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
