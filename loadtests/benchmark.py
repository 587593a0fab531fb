"""Side-by-side benchmark per photo size class: where does the time go, and are we faster
than the peers?

One run, same photos, same machine, for each size class of ``loadtests.photo_sets`` (the
originals of ../shared/data, and its group and single-face photos scaled to 720p, 1080p and
12 MP, JPEG q90):
  1. in-process onnxruntime doing our whole pipeline (decode, detect, align, multitask): the floor
  2. direct Triton face_pipeline calls over gRPC, concurrency 1, 16 and 32
  3. the full API (/analyze: + matching + database), concurrency 1 and 16
  4. the peers of ../shared/peers, if set up: OpenCV YuNet+SFace as its demo runs it (YuNet at
     the photo's own size) and as a careful user runs it (scaled to a long side of 640 first;
     the faster of the two is "the OpenCV peer"), and face_recognition with its default HOG model
It prints images/s, faces/s, p50/p99 latency, Triton's batching ratio (inference count /
execution count, from its metrics) and, per class, the ratios the targets are about; the load
average of the machine is recorded before and after every class (other work on a shared
machine slows every figure; the ratios are taken side by side within a class). Writes JSON
and a Markdown report.

    python -m loadtests.benchmark [--seconds 15] [--classes original 720p 1080p 12MP]   (make bench)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.settings import PROJECT_ROOT, SHARED_DATA, get_settings
from loadtests import photo_sets
from pipeline import contract as C
from pipeline.detect import MIN_FACE_SIZE
from tools import api_process
from tools.triton_local import batching_ratio, inference_counts, serving

DATA = SHARED_DATA
PEERS_DIR = SHARED_DATA.parent / "peers"
# 16 concurrent 12 MP photos wait longer than the 15 s serving deadline on a busy 2-core
# machine: measure throughput and latency (p50/p99 are reported) rather than 503s
DEADLINE_S = 600
API_ENV = {"TRITON_TIMEOUT_S": str(DEADLINE_S)}
TARGETS = {  # issue 19: per size class, measured side by side in one run
    "API c16 / best OpenCV": 1.5,
    "API c16 / face_recognition": 6.0,
    "API c16 / in-process floor": 0.9,
    "face_multitask batching at Triton c32": 4.0,
}


def bench_photos(data: Path = DATA) -> list[Path]:
    """The 38 photos the peers' published figures use."""
    return photo_sets.original_photos(data)


def summarise(latencies: list[float], wall: float, faces: int = 0) -> dict:
    lat = np.asarray(latencies) * 1000
    return {"images": len(lat), "images_per_s": round(len(lat) / wall, 2),
            "faces_per_s": round(faces / wall, 2) if faces else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None}


# -- 1. in-process floor ----------------------------------------------------------------------
def inprocess_worker(args):
    """One process's closed loop over its photos: (latencies, faces, seconds until the last
    image in flight at the deadline finished)."""
    det, mt, photos, seconds, promise = args
    import cv2

    from pipeline.inprocess import InProcessPipeline

    cv2.setNumThreads(1)  # as in face_pipeline: one process per core, no nested thread pools
    pipe = InProcessPipeline(det, mt, threads=1, min_face_promise=promise)
    datas = [p.read_bytes() for p in photos]
    pipe.analyze(datas[0])  # warm-up outside the window
    lat, faces, i = [], 0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        faces += len(pipe.analyze(datas[i % len(datas)]).faces)
        lat.append(time.perf_counter() - t)
        i += 1
    return lat, faces, time.perf_counter() - end + seconds


def inprocess_pool(det: Path, mt: Path, photos: list[Path], seconds: float, procs: int = 2,
                   promise: int = MIN_FACE_SIZE) -> list:
    """inprocess_worker in `procs` spawned processes, the photos dealt out between them."""
    with mp.get_context("spawn").Pool(procs) as pool:
        return pool.map(inprocess_worker, [(det, mt, photos[k::procs] or photos, seconds, promise)
                                           for k in range(procs)])


def run_inprocess(det: Path, mt: Path, photos: list[Path], seconds: float, procs: int = 2) -> dict:
    t0 = time.perf_counter()
    results = inprocess_pool(det, mt, photos, seconds, procs)
    wall = time.perf_counter() - t0 - 0  # includes warm-up; use the measured window instead
    lat = [x for r in results for x in r[0]]
    return summarise(lat, seconds, sum(r[1] for r in results)) | {"procs": procs, "wall_s": round(wall, 1)}


# -- 2./3. closed-loop load at a given concurrency ------------------------------------------------
async def _closed_loop(call, datas: list[bytes], concurrency: int, seconds: float) -> dict:
    lat, faces, errors, counter = [], [0], [0], iter(range(10 ** 9))
    await call(datas[0])  # warm-up
    end = time.perf_counter() + seconds

    async def worker():
        while time.perf_counter() < end:
            i = next(counter)
            t = time.perf_counter()
            try:
                n = await call(datas[i % len(datas)])
                faces[0] += n  # not `+= await`: that reads faces[0] before the await
                lat.append(time.perf_counter() - t)
            except Exception:  # noqa: BLE001 - counted, reported
                errors[0] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return summarise(lat, wall, faces[0]) | {"concurrency": concurrency, "errors": errors[0]}


def pipeline_inputs(aio, data: bytes, min_face_size: int = 0) -> list:
    """face_pipeline's inputs for one photo (`aio`: tritonclient.grpc.aio)."""
    t = aio.InferInput(C.PL_IMAGE, [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    inputs = [t]
    if min_face_size:
        m = aio.InferInput(C.PL_MIN_FACE_SIZE, [1, 1], "INT32")
        m.set_data_from_numpy(np.array([[min_face_size]], np.int32))
        inputs.append(m)
    return inputs


def pipeline_call(client, aio, min_face_size: int = 0):
    """An async call(data) -> number of faces, asking for what the API asks for."""
    outputs = [aio.InferRequestedOutput(n) for n in (C.PL_BOXES, C.PL_EMBEDDINGS, C.PL_AGE, C.PL_GENDER)]

    async def call(data: bytes) -> int:
        # the same 600 s deadline as the API's (API_ENV): queued requests are measured, not
        # rejected at face_pipeline's default 15 s queue timeout
        r = await client.infer(C.PIPELINE, pipeline_inputs(aio, data, min_face_size), outputs=outputs,
                               client_timeout=DEADLINE_S, timeout=int(DEADLINE_S * 1e6))
        return len(r.as_numpy(C.PL_BOXES)[0])

    return call


async def run_triton(grpc_url: str, datas: list[bytes], concurrencies, seconds: float,
                     metrics_url: str | None = None) -> dict:
    """Closed loops at each concurrency; with metrics_url, each one's Triton batching ratio."""
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(grpc_url)
    call = pipeline_call(client, aio)

    try:
        out = {}
        for c in concurrencies:
            before = inference_counts(metrics_url) if metrics_url else None
            out[f"c{c}"] = await _closed_loop(call, datas, c, seconds)
            if before is not None:
                out[f"c{c}"]["batching"] = batching_ratio(before, inference_counts(metrics_url))
        return out
    finally:
        await client.close()


async def run_api(base_url: str, datas: list[bytes], concurrencies, seconds: float) -> dict:
    from face_analytics_client import NO_RETRY, AsyncFaceAnalyticsClient

    # no retries: a 429/503 is an error of the measured run, not something to hide
    async with AsyncFaceAnalyticsClient(base_url, timeout=600, retry=NO_RETRY, max_connections=64) as client:
        async def call(data: bytes) -> int:
            return len((await client.analyze(data)).faces)

        return {f"c{c}": await _closed_loop(call, datas, c, seconds) for c in concurrencies}


def run_peer(script: str, python: Path, photos: list[Path], seconds: float, procs: int = 2,
             extra: tuple[str, ...] = (), slack: float = 4) -> dict | None:
    """A peer of ../shared/peers in its own virtualenv: its last JSON line, or the error."""
    if not python.exists():
        return None
    cmd = [str(python), str(PEERS_DIR / script), "speed", "--images", *map(str, photos),
           "--seconds", str(seconds), "--procs", str(procs), *extra]
    # face_recognition's HOG on a 12 MP photo takes seconds per image: the in-flight images
    # finish after the window, so allow for them (`slack` windows more)
    env = dict(os.environ, PEERS=str(python.parents[2]))  # where the peers find their model files
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * slack + 600, env=env)
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-300:]}
    return json.loads(r.stdout.strip().splitlines()[-1])




# -- orchestration ------------------------------------------------------------------------
def load_average() -> list[float]:
    """The machine's 1/5/15-minute load (as `uptime` prints it): how busy it was meanwhile."""
    return [round(x, 2) for x in os.getloadavg()]


def peers_for(photos: list[Path], seconds: float, peers_dir: Path) -> dict:
    opencv, dlib = peers_dir / "opencv" / "bin" / "python", peers_dir / "dlib" / "bin" / "python"
    out = {
        "opencv_demo_full_size": run_peer("peer_opencv_zoo.py", opencv, photos, seconds),
        "opencv_max_side_640": run_peer("peer_opencv_zoo.py", opencv, photos, seconds, extra=("--max-side", "640")),
        "face_recognition_hog": run_peer("peer_face_recognition.py", dlib, photos, seconds),
    }
    for r in out.values():
        if r:
            r.pop("faces_per_image", None)  # per-path detail: long, and not a speed figure
    return out


def class_ratios(r: dict) -> dict:
    """The figures the targets are about, for one size class."""
    api = r["api"]["c16"]["images_per_s"]
    peers = r.get("peers", {})
    opencv = [v["images_per_s"] for k, v in peers.items() if k.startswith("opencv") and v and v.get("images_per_s")]
    fr = peers.get("face_recognition_hog") or {}
    out = {
        "API c16 / best OpenCV": round(api / max(opencv), 2) if opencv else None,
        "API c16 / face_recognition": round(api / fr["images_per_s"], 2) if fr.get("images_per_s") else None,
        "API c16 / in-process floor": round(api / r["inprocess"]["images_per_s"], 3),
        "face_multitask batching at Triton c32": r["triton"]["c32"]["batching"][C.MULTITASK],
        "API c16 / Triton c16": round(api / r["triton"]["c16"]["images_per_s"], 3),
        "Triton c16 / in-process floor": round(r["triton"]["c16"]["images_per_s"] / r["inprocess"]["images_per_s"], 3),
    }
    return out


def _row(name: str, r: dict) -> str:
    return (f"| {name} | {r.get('images_per_s')} | {r.get('faces_per_s')} | {r.get('p50_ms')} | "
            f"{r.get('p99_ms')} |")


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['cpus']} cores, {result.get('machine', '')}; {result['seconds']:.0f} s per "
             f"measurement; started {result.get('started', '')}.", ""]
    for name, r in result["classes"].items():
        d = r["set"]
        lines += [f"## {name}: {d['photos']} photos, median {d['median_mp']} MP (largest {d['max_mp']} MP), "
                  f"median {d['median_mb']} MB", "",
                  f"Load average (1/5/15 min) before {r['load_before']}, after {r['load_after']}.", "",
                  "| what | images/s | faces/s | p50 ms | p99 ms |", "|---|---|---|---|---|",
                  _row("in-process onnxruntime, 2 procs: the floor", r["inprocess"])]
        for c, v in r["triton"].items():
            lines.append(_row(f"Triton face_pipeline gRPC, concurrency {c[1:]}", v))
        for c, v in r["api"].items():
            lines.append(_row(f"API /analyze, concurrency {c[1:]}", v))
        for pname, v in r.get("peers", {}).items():
            if v and "images_per_s" in v:
                lines.append(_row(f"peer {pname}, 2 procs", v))
            elif v:
                lines.append(f"| peer {pname} | failed: {v.get('error', '')[:80]} | | | |")
        lines.append("")
        for c, v in r["triton"].items():
            if "batching" in v:
                lines.append(f"- Triton batching ratio at concurrency {c[1:]}: " +
                             ", ".join(f"{m} {x}" for m, x in v["batching"].items()))
        for k, v in r["ratios"].items():
            target = TARGETS.get(k)
            verdict = "" if target is None or v is None else (" (target ≥ %s: %s)" % (target, "met" if v >= target else "NOT met"))
            lines.append(f"- {k}: **{v}**{verdict}")
        lines.append("")
    return "\n".join(lines)


def run(seconds: float, out: Path, grpc_url: str, metrics_url: str, det: Path, mt: Path,
        peers_dir: Path | None = Path("/tmp/peers"), photos: list[Path] | None = None,
        classes: list[str] | None = None, data: Path = DATA, limit: int | None = None,
        work: Path | None = None) -> dict:
    """Every measurement for every size class. `photos` replaces the built sets by one class
    of given photos (tests)."""
    work = work or PROJECT_ROOT / "var" / "bench"
    sets = {"given": photos} if photos else photo_sets.build(data, work / "photos", classes, limit)
    result = {"seconds": seconds, "cpus": os.cpu_count(), "machine": _machine(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "classes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = api_process.start_api(grpc_url, Path(tmp), **API_ENV)
        try:
            for name, paths in sets.items():
                result["classes"][name] = _run_class(name, paths, seconds, grpc_url, metrics_url, url,
                                                     det, mt, peers_dir)
                save(result, out)  # a long run cut short keeps the classes it finished
        finally:
            api_process.stop(proc)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    save(result, out)
    print(markdown(result), flush=True)
    return result


def save(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2))
    (out / "benchmark.md").write_text(markdown(result))


def _run_class(name, paths, seconds, grpc_url, metrics_url, api_url, det, mt, peers_dir) -> dict:
    datas = [p.read_bytes() for p in paths]
    r = {"set": photo_sets.describe(paths), "load_before": load_average()}
    print(f"[bench] {name}: {len(paths)} photos, {seconds:.0f}s per measurement, load {r['load_before']}", flush=True)
    print("[bench]   in-process onnxruntime ...", flush=True)
    r["inprocess"] = run_inprocess(det, mt, paths, seconds)
    print("[bench]   Triton direct ...", flush=True)
    r["triton"] = asyncio.run(run_triton(grpc_url, datas, (1, 16, 32), seconds, metrics_url))
    print("[bench]   API ...", flush=True)
    r["api"] = asyncio.run(run_api(api_url, datas, (1, 16), seconds))
    if peers_dir is not None:
        print("[bench]   peers ...", flush=True)
        r["peers"] = peers_for(paths, seconds, peers_dir)
    r["load_after"] = load_average()
    r["ratios"] = class_ratios(r)
    print(f"[bench]   {name}: " + ", ".join(f"{k} {v}" for k, v in r["ratios"].items()), flush=True)
    return r


def _machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{model}, {mem:.0f} GiB"


def published_models() -> tuple[Path, Path, Path]:
    """The local model repository and the detector and multitask ONNX files in it."""
    repo = get_settings().paths.model_repository
    return repo, next((repo / C.DETECTOR).glob("*/model.onnx")), next((repo / C.MULTITASK).glob("*/model.onnx"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--classes", nargs="+", choices=list(photo_sets.SIZE_CLASSES), default=None)
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "benchmark")
    p.add_argument("--peers", type=Path, default=Path("/tmp/peers"),
                   help="virtualenvs made by ../shared/peers/setup.sh")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="only the first N photos of each class (a quick look)")
    args = p.parse_args(argv)
    repo, det, mt = published_models()
    with tempfile.TemporaryDirectory() as work, serving(repo, Path(work)) as server:
        run(args.seconds, args.out, server.grpc_url, server.metrics_url, det, mt,
            peers_dir=None if args.no_peers else args.peers, classes=args.classes, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
