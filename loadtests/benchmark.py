"""Side-by-side benchmark per photo size class: where does the time go, and are we faster
than the peers?

One run, same photos, same machine, for each size class of ``loadtests.photo_sets`` (the
originals of ../shared/data, and its group and single-face photos scaled to 720p, 1080p and
12 MP, JPEG q90):
  1. in-process onnxruntime doing our whole pipeline (decode, detect, align, multitask): the floor
  2. direct Triton face_pipeline calls over gRPC, concurrency 1, 16 and 32
  3. the full API (/analyze: + matching + database), concurrency 1 and 16, and at 16 with
     small_faces=false (one 480 px letterbox pass: the reach of OpenCV's YuNet at 640 px, whose
     recall on our pasted-face set is 0 below 16 px of its input and 0.53 at 24-32 px)
  4. the peers of ../shared/peers, if set up: OpenCV YuNet+SFace as its demo runs it (YuNet at
     the photo's own size) and as a careful user runs it (scaled to a long side of 640 first;
     the faster of the two is "the OpenCV peer"), and face_recognition with its default HOG model
It prints images/s, faces/s, p50/p99 latency, Triton's batching ratio (inference count /
execution count, from its metrics) and, per class, the ratios the targets are about; the load
average of the machine is recorded before and after every class (other work on a shared
machine slows every figure; the ratios are taken side by side within a class). Writes JSON
and a Markdown report.

    python -m loadtests.benchmark [--seconds 6] [--rounds 3] [--classes original 720p 1080p 12MP]   (make bench)
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
    """One measurement's figures; `wall_s`, `faces` and the raw latencies (`_lat`, seconds) are
    kept so that rounds of the same measurement can be pooled (`pooled`)."""
    lat = np.asarray(latencies) * 1000
    return {"images": len(lat), "images_per_s": round(len(lat) / wall, 2),
            "faces_per_s": round(faces / wall, 2) if faces else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "wall_s": round(wall, 3), "faces": faces, "_lat": list(latencies)}


def pooled(parts: list[dict]) -> dict:
    """Rounds of one measurement as one figure: images, faces and seconds summed (a round run
    while the machine was busier weighs by its length, not by its rate), latencies pooled,
    Triton's inference and execution counts summed; `rounds` keeps each round's images/s."""
    if len(parts) == 1 and "_lat" not in parts[0] and "_counts" not in parts[0]:
        return parts[0]
    if any(p is None or "error" in p for p in parts):  # a peer that failed in any round
        return next(p for p in parts if p is None or "error" in p)
    if "processed" in parts[0]:  # a peer's JSON: it reports rates, not its latencies
        wall = sum(p["elapsed_s"] for p in parts)
        out = dict(parts[-1])
        out.update(processed=sum(p["processed"] for p in parts), elapsed_s=round(wall, 2),
                   images_per_s=round(sum(p["processed"] for p in parts) / wall, 3),
                   faces_per_s=round(sum(p["faces_per_s"] * p["elapsed_s"] for p in parts) / wall, 3),
                   p50_ms=round(float(np.median([p["p50_ms"] for p in parts])), 1),  # median of rounds
                   p99_ms=max(p["p99_ms"] for p in parts))
    else:
        lat = [x for p in parts for x in p["_lat"]]
        out = summarise(lat, sum(p["wall_s"] for p in parts), sum(p["faces"] for p in parts))
        for key in ("concurrency", "procs"):
            if key in parts[0]:
                out[key] = parts[0][key]
        if "errors" in parts[0]:
            out["errors"] = sum(p["errors"] for p in parts)
        if "_counts" in parts[0]:
            counts = {m: [sum(p["_counts"][m][k] for p in parts) for k in (0, 1)] for m in parts[0]["_counts"]}
            out["batching"] = {m: round(n / max(e, 1), 2) for m, (n, e) in counts.items()}
        out.pop("_lat")
    out["rounds"] = [p["images_per_s"] for p in parts]
    return out


# -- 1. in-process floor ----------------------------------------------------------------------
_CURSOR = None  # the pool's shared next-photo counter (inprocess_pool)


def _share_cursor(cursor) -> None:
    global _CURSOR
    _CURSOR = cursor


def _next_photo(n: int) -> int:
    with _CURSOR.get_lock():
        i = _CURSOR.value
        _CURSOR.value = i + 1
    return i % n


def inprocess_worker(args):
    """One process's closed loop: (latencies, faces, seconds from the start of its window until
    its last image finished). The processes take the next photo from one shared counter, as the
    clients of a closed loop do: dealt fixed halves of the list, a process with the cheaper half
    ran through it more often (12 MP: the two halves cost 0.55 and 1.07 s per photo here)."""
    det, mt, photos, seconds, promise = args
    import cv2

    from pipeline.inprocess import InProcessPipeline

    cv2.setNumThreads(1)  # as in face_pipeline: one process per core, no nested thread pools
    pipe = InProcessPipeline(det, mt, threads=1, min_face_promise=promise)
    datas = [p.read_bytes() for p in photos]
    pipe.analyze(datas[0])  # warm-up outside the window
    lat, faces = [], 0
    start = time.perf_counter()
    while time.perf_counter() < start + seconds:
        i = _next_photo(len(datas))
        t = time.perf_counter()
        faces += len(pipe.analyze(datas[i]).faces)
        lat.append(time.perf_counter() - t)
    return lat, faces, time.perf_counter() - start


def inprocess_pool(det: Path, mt: Path, photos: list[Path], seconds: float, procs: int = 2,
                   promise: int = MIN_FACE_SIZE) -> list:
    """inprocess_worker in `procs` spawned processes, taking the photos in turn from one counter."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs, initializer=_share_cursor, initargs=(ctx.Value("q", 0),)) as pool:
        return pool.map(inprocess_worker, [(det, mt, photos, seconds, promise)] * procs)


def run_inprocess(det: Path, mt: Path, photos: list[Path], seconds: float, procs: int = 2) -> dict:
    results = inprocess_pool(det, mt, photos, seconds, procs)
    lat = [x for r in results for x in r[0]]
    # from the start of the window (not the pool's: spawning and warm-up) until the last image
    # finished, as the closed loops count theirs: an image started before the deadline counts
    # and so does its time (dividing by the window alone counted 12 MP photos that ran seconds
    # past it: +26-42% at 12 MP, +3% at 1080p, measured here)
    return summarise(lat, max(r[2] for r in results), sum(r[1] for r in results)) | {"procs": procs}


# -- 2./3. closed-loop load at a given concurrency ------------------------------------------------
async def _closed_loop(call, datas: list[bytes], concurrency: int, seconds: float, warmups: int = 1,
                       meter=None) -> dict:
    """`concurrency` clients calling `call(data) -> faces` over `datas` for `seconds`. `meter`:
    called when the window opens, it returns a function of the images answered that gives
    extra figures for the window (loadtests.api_cost: CPU per image)."""
    lat, faces, errors, counter, why = [], [0], [0], iter(range(10 ** 9)), set()
    for d in datas[:warmups]:
        await call(d)  # warm-up, outside the window
    end = time.perf_counter() + seconds

    async def worker():
        while time.perf_counter() < end:
            i = next(counter)
            t = time.perf_counter()
            try:
                n = await call(datas[i % len(datas)])
                faces[0] += n  # not `+= await`: that reads faces[0] before the await
                lat.append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - counted, reported (the first few kinds)
                errors[0] += 1
                if len(why) < 3:
                    why.add(f"{type(exc).__name__}: {str(exc)[:160]}")

    extra = meter() if meter else None
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    out = summarise(lat, wall, faces[0]) | {"concurrency": concurrency, "errors": errors[0]}
    if why:
        out["error_kinds"] = sorted(why)
    return out | (extra(len(lat)) if extra else {})


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
                after = inference_counts(metrics_url)
                out[f"c{c}"]["batching"] = batching_ratio(before, after)
                out[f"c{c}"]["_counts"] = {m: (after[m][0] - before[m][0], after[m][1] - before[m][1])
                                           for m in after}
        return out
    finally:
        await client.close()


async def run_api(base_url: str, datas: list[bytes], concurrencies, seconds: float, **options) -> dict:
    """`options`: per-request options of /analyze (e.g. small_faces=False)."""
    from face_analytics_client import NO_RETRY, AsyncFaceAnalyticsClient

    # no retries: a 429/503 is an error of the measured run, not something to hide
    async with AsyncFaceAnalyticsClient(base_url, timeout=600, retry=NO_RETRY, max_connections=64) as client:
        async def call(data: bytes) -> int:
            return len((await client.analyze(data, **options)).faces)

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
        # small_faces=false: one 480 px letterbox pass, the reach of OpenCV's YuNet at 640 px
        "API c16 small_faces=false / best OpenCV": (
            round(r["api_one_pass"]["c16"]["images_per_s"] / max(opencv), 2)
            if opencv and r.get("api_one_pass") else None),
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
    lines = [f"Machine: {result['cpus']} cores, {result.get('machine', '')}; {result.get('rounds', 1)} "
             f"interleaved round(s) of {result['seconds']:.0f} s per measurement; started "
             f"{result.get('started', '')}.", ""]
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
        for c, v in r.get("api_one_pass", {}).items():
            lines.append(_row(f"API /analyze?small_faces=false, concurrency {c[1:]}", v))
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
            spread = r.get("ratios_by_round", {}).get(k)
            each = f"; by round {', '.join(map(str, spread))}" if spread else ""
            lines.append(f"- {k}: **{v}**{verdict}{each}")
        lines.append("")
    return "\n".join(lines)


def run(seconds: float, out: Path, grpc_url: str, metrics_url: str, det: Path, mt: Path,
        peers_dir: Path | None = Path("/tmp/peers"), photos: list[Path] | None = None,
        classes: list[str] | None = None, data: Path = DATA, limit: int | None = None,
        work: Path | None = None, rounds: int = 1) -> dict:
    """Every measurement for every size class. `photos` replaces the built sets by one class
    of given photos (tests). With `rounds` > 1 every measurement of a class runs that many
    times, the rounds interleaved (see _run_class)."""
    work = work or PROJECT_ROOT / "var" / "bench"
    sets = {"given": photos} if photos else photo_sets.build(data, work / "photos", classes, limit)
    result = {"seconds": seconds, "rounds": rounds, "cpus": os.cpu_count(), "machine": _machine(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "classes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = api_process.start_api(grpc_url, Path(tmp), **API_ENV)
        try:
            for name, paths in sets.items():
                result["classes"][name] = _run_class(name, paths, seconds, grpc_url, metrics_url, url,
                                                     det, mt, peers_dir, rounds)
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


def _run_class(name, paths, seconds, grpc_url, metrics_url, api_url, det, mt, peers_dir, rounds=1) -> dict:
    """The measurements of one class. On a shared machine the load can change between two
    measurements run one after the other, and a ratio of two of them then measures the load:
    so with `rounds` > 1 they run in rounds, each round starting at the next measurement
    (in-process, Triton, API, peers, rotated), and each figure pools its rounds. Every arm walks
    the photos in list order; round k starts k/rounds of the way along the list, so an arm that
    gets through only a few photos per round (the floor at 12 MP) does not measure the first
    few photos every time."""
    r = {"set": photo_sets.describe(paths), "load_before": load_average()}
    print(f"[bench] {name}: {len(paths)} photos, {rounds} x {seconds:.0f}s per measurement, "
          f"load {r['load_before']}", flush=True)
    arms = [("inprocess", lambda ps, ds: run_inprocess(det, mt, ps, seconds)),
            ("triton", lambda ps, ds: asyncio.run(run_triton(grpc_url, ds, (1, 16, 32), seconds, metrics_url))),
            ("api", lambda ps, ds: asyncio.run(run_api(api_url, ds, (1, 16), seconds))),
            # the speed/reach choice: one letterbox pass, about the reach of OpenCV at 640 px
            ("api_one_pass", lambda ps, ds: asyncio.run(run_api(api_url, ds, (16,), seconds, small_faces=False)))]
    if peers_dir is not None:
        arms.append(("peers", lambda ps, ds: peers_for(ps, seconds, peers_dir)))
    runs: dict[str, list] = {arm: [] for arm, _ in arms}
    for k in range(rounds):
        first = k * len(paths) // rounds
        ps = paths[first:] + paths[:first]
        ds = [p.read_bytes() for p in ps]
        for arm, measure in arms[k % len(arms):] + arms[:k % len(arms)]:
            print(f"[bench]   round {k + 1}: {arm} ...", flush=True)
            runs[arm].append(measure(ps, ds))
    r["inprocess"] = pooled(runs["inprocess"])
    for arm in ("triton", "api", "api_one_pass", "peers"):
        if runs.get(arm):
            r[arm] = {key: pooled([one[key] for one in runs[arm]]) for key in runs[arm][0]}
    r["load_after"] = load_average()
    r["ratios"] = class_ratios(r)
    if rounds > 1:  # the spread of each ratio over the rounds: how much the load moved it
        each = [class_ratios({"inprocess": runs["inprocess"][k],
                              **{arm: runs[arm][k] for arm in ("triton", "api", "api_one_pass", "peers")
                                 if runs.get(arm)}})
                for k in range(rounds)]
        r["ratios_by_round"] = {key: [e[key] for e in each] for key in r["ratios"]}
    for part in [r["inprocess"], *r["triton"].values(), *r["api"].values(), *r.get("api_one_pass", {}).values()]:
        part.pop("_lat", None), part.pop("_counts", None)
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
    p.add_argument("--seconds", type=float, default=6, help="per measurement and round")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds per class: ratios survive load that changes during the run")
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
            peers_dir=None if args.no_peers else args.peers, classes=args.classes, limit=args.limit,
            rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
