"""Side-by-side benchmark: where does the time go, and are we faster than the peers?

One run, same photos, same machine:
  1. in-process onnxruntime doing our whole pipeline (decode, detect, align, multitask): the floor
  2. direct Triton face_pipeline calls over gRPC, concurrency 1 and 16
  3. the full API (/analyze: + matching + database), concurrency 1 and 16
  4. the peers of ../shared/peers (OpenCV YuNet+SFace, face_recognition), if set up
It prints images/s, p50/p99 latency and the ratios API/Triton and Triton/in-process, plus
Triton's batching ratio (inference count / execution count) from its metrics, and writes
JSON and a Markdown table.

    python -m loadtests.benchmark [--seconds 20] [--out bench/results]   (make bench)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from api.settings import PROJECT_ROOT, get_settings
from pipeline import contract as C

DATA = PROJECT_ROOT / ".." / "shared" / "data"
PEERS_DIR = PROJECT_ROOT / ".." / "shared" / "peers"


def bench_photos(data: Path = DATA) -> list[Path]:
    """The 38 photos the peers' published figures use."""
    return sorted((data / "detection" / "images").glob("*")) + sorted((data / "verification" / "images").rglob("*.*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarise(latencies: list[float], wall: float, faces: int = 0) -> dict:
    lat = np.asarray(latencies) * 1000
    return {"images": len(lat), "images_per_s": round(len(lat) / wall, 2),
            "faces_per_s": round(faces / wall, 2) if faces else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None}


# -- 1. in-process floor ----------------------------------------------------------------------
def _inprocess_worker(args):
    det, mt, photos, seconds = args
    import cv2

    from pipeline.inprocess import InProcessPipeline

    cv2.setNumThreads(1)  # as in face_pipeline: one process per core, no nested thread pools
    pipe = InProcessPipeline(det, mt, threads=1)
    datas = [p.read_bytes() for p in photos]
    pipe.analyze(datas[0])  # warm-up outside the window
    lat, faces, i = [], 0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        faces += len(pipe.analyze(datas[i % len(datas)])[C.PL_BOXES])
        lat.append(time.perf_counter() - t)
        i += 1
    return lat, faces


def run_inprocess(det: Path, mt: Path, photos: list[Path], seconds: float, procs: int = 2) -> dict:
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    with ctx.Pool(procs) as pool:
        results = pool.map(_inprocess_worker, [(det, mt, photos[k::procs] or photos, seconds)
                                               for k in range(procs)])
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


async def run_triton(grpc_url: str, datas: list[bytes], concurrencies, seconds: float) -> dict:
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(grpc_url)
    outputs = [aio.InferRequestedOutput(C.PL_BOXES), aio.InferRequestedOutput(C.PL_EMBEDDINGS),
               aio.InferRequestedOutput(C.PL_AGE), aio.InferRequestedOutput(C.PL_GENDER)]

    async def call(data: bytes) -> int:
        t = aio.InferInput(C.PL_IMAGE, [1, 1], "BYTES")
        t.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        r = await client.infer(C.PIPELINE, [t], outputs=outputs)
        return len(r.as_numpy(C.PL_BOXES)[0])

    try:
        return {f"c{c}": await _closed_loop(call, datas, c, seconds) for c in concurrencies}
    finally:
        await client.close()


async def run_api(base_url: str, datas: list[bytes], concurrencies, seconds: float) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        async def call(data: bytes) -> int:
            r = await client.post("/analyze", files={"file": ("photo", data, "application/octet-stream")})
            r.raise_for_status()
            return len(r.json()["faces"])

        return {f"c{c}": await _closed_loop(call, datas, c, seconds) for c in concurrencies}


def batching(metrics_url: str) -> dict:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out = {}
    for model in (C.DETECTOR, C.MULTITASK, C.PIPELINE):
        def value(name):
            m = re.search(rf'^{name}{{model="{model}",version="\d+"}} (\S+)$', text, re.M)
            return float(m.group(1)) if m else 0.0
        out[model] = (value("nv_inference_count"), value("nv_inference_exec_count"))
    return out


def run_peer(script: str, python: Path, photos: list[Path], seconds: float, procs: int = 2) -> dict | None:
    if not python.exists():
        return None
    cmd = [str(python), str(PEERS_DIR / script), "speed", "--images", *map(str, photos),
           "--seconds", str(seconds), "--procs", str(procs)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 120)
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-300:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- orchestration ------------------------------------------------------------------------
def start_api(triton_grpc: str, data_dir: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, TRITON_GRPC_URL=triton_grpc, FA_DATA_DIR=str(data_dir))
    env.pop("MYSQL_HOST", None)  # embedded SQLite: the benchmark must not write to a real database
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers), "--no-access-log",
                             "--log-level", "warning"], env=env, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return proc, url
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.25)
    proc.terminate()
    raise RuntimeError("the API did not come up")


def markdown(result: dict) -> str:
    rows = [("in-process onnxruntime (2 procs)", result["inprocess"])]
    for c in ("c1", "c16"):
        rows.append((f"Triton face_pipeline gRPC, concurrency {c[1:]}", result["triton"][c]))
    for c in ("c1", "c16"):
        rows.append((f"API /analyze, concurrency {c[1:]}", result["api"][c]))
    for name, peer in result.get("peers", {}).items():
        if peer and "images_per_s" in peer:
            rows.append((f"peer: {name} (2 procs)", {"images_per_s": peer["images_per_s"],
                                                      "faces_per_s": peer.get("faces_per_s"),
                                                      "p50_ms": peer.get("latency_p50_ms", peer.get("p50_ms")),
                                                      "p99_ms": peer.get("latency_p99_ms", peer.get("p99_ms"))}))
    lines = ["| what | images/s | faces/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {r['images_per_s']} | {r.get('faces_per_s')} | {r.get('p50_ms')} | {r.get('p99_ms')} |"
              for n, r in rows]
    lines.append("")
    for k, v in result["ratios"].items():
        lines.append(f"- {k}: **{v}**")
    return "\n".join(lines) + "\n"


def run(seconds: float, out: Path, grpc_url: str, metrics_url: str, det: Path, mt: Path,
        peers_dir: Path | None = Path("/tmp/peers"), photos: list[Path] | None = None) -> dict:
    photos = photos or bench_photos()
    datas = [p.read_bytes() for p in photos]
    print(f"[bench] {len(photos)} photos, {seconds:.0f}s per measurement", flush=True)
    result = {"photos": len(photos), "seconds": seconds, "cpus": os.cpu_count()}
    print("[bench] in-process onnxruntime ...", flush=True)
    result["inprocess"] = run_inprocess(det, mt, photos, seconds)
    print("[bench] Triton direct ...", flush=True)
    before = batching(metrics_url)
    result["triton"] = asyncio.run(run_triton(grpc_url, datas, (1, 16), seconds))
    after = batching(metrics_url)
    result["batching"] = {m: round((after[m][0] - before[m][0]) / max(after[m][1] - before[m][1], 1), 2)
                          for m in after}
    print("[bench] API ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_api(grpc_url, Path(tmp))
        try:
            result["api"] = asyncio.run(run_api(url, datas, (1, 16), seconds))
        finally:
            proc.terminate()
            proc.wait(30)
    if peers_dir is not None:
        base = peers_dir
        print("[bench] peers ...", flush=True)
        result["peers"] = {
            "opencv_yunet_sface": run_peer("peer_opencv_zoo.py", base / "opencv" / "bin" / "python", photos, seconds),
            "face_recognition": run_peer("peer_face_recognition.py", base / "dlib" / "bin" / "python", photos, seconds),
        }
    t16, a16, ip = result["triton"]["c16"], result["api"]["c16"], result["inprocess"]
    result["ratios"] = {
        "API / Triton throughput at concurrency 16": round(a16["images_per_s"] / t16["images_per_s"], 3),
        "Triton c16 / in-process throughput": round(t16["images_per_s"] / ip["images_per_s"], 3),
        "Triton batching ratio (inferences per execution)": result["batching"],
    }
    for name, peer in result.get("peers", {}).items():
        if peer and peer.get("images_per_s"):
            result["ratios"][f"API c16 / {name} throughput"] = round(a16["images_per_s"] / peer["images_per_s"], 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2))
    (out / "benchmark.md").write_text(markdown(result))
    print(markdown(result))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "benchmark")
    p.add_argument("--peers", type=Path, default=Path("/tmp/peers"),
                   help="virtualenvs made by ../shared/peers/setup.sh")
    p.add_argument("--no-peers", action="store_true")
    args = p.parse_args(argv)
    s = get_settings()
    from tools.triton_local import TritonServer

    repo = s.paths.model_repository
    det = next((repo / C.DETECTOR).glob("*/model.onnx"))
    mt = next((repo / C.MULTITASK).glob("*/model.onnx"))
    with tempfile.TemporaryDirectory() as work:
        server = TritonServer(repository=repo, http_port=_free_port(), grpc_port=_free_port(),
                              metrics_port=_free_port(), work_dir=Path(work))
        server.start(240)
        try:
            run(args.seconds, args.out, server.grpc_url, server.metrics_url, det, mt, peers_dir=None if args.no_peers else args.peers)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
