"""Where does a request's time go? Profile one size class under load before optimising.

Starts Triton and the API as the benchmark does, drives /analyze at a concurrency for a few
seconds (through face_analytics_client, which sends the photo as the raw body), and reports:
  - the API's CPU time per image over that window (utime + stime of the process from /proc,
    every thread: loadtests.api_cost), beside Triton's (tritonserver and its stub processes);
    py-spy's shares below are of this, often small, amount;
  - Triton's per-model statistics over that window (GET /v2/models/<m>/stats): per execution
    the time queued, and compute input / infer / output, and the inferences per execution;
  - a py-spy profile of the API process (top functions by own time), if py-spy is installed
    (`pip install py-spy`; it samples from outside, so the API runs unmodified);
  - with --ort, onnxruntime's own profiler on the in-process pipeline over the same photos
    (per-operator time of both models, from its JSON trace).

    python -m loadtests.profile [--size-class 1080p] [--seconds 20] [--concurrency 16] [--ort]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from core.settings import PROJECT_ROOT
from loadtests import api_cost, benchmark, photo_sets
from pipeline import contract as C
from tools import api_process
from tools.triton_local import serving


def triton_stats(http_url: str) -> dict:
    out = {}
    for model in (C.PIPELINE, C.DETECTOR, C.MULTITASK):
        body = json.loads(urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=5).read())
        st = body["model_stats"][0]
        inf = st["inference_stats"]
        out[model] = {"inferences": int(st["inference_count"]), "executions": int(st["execution_count"]),
                      **{k: (int(inf[k]["count"]), int(inf[k]["ns"])) for k in
                         ("queue", "compute_input", "compute_infer", "compute_output")}}
    return out


def stats_delta(before: dict, after: dict) -> dict:
    """Per model: inferences per execution and mean ms per request in each phase."""
    out = {}
    for m in after:
        execs = after[m]["executions"] - before[m]["executions"]
        infs = after[m]["inferences"] - before[m]["inferences"]
        row = {"executions": execs, "inferences_per_execution": round(infs / max(execs, 1), 2)}
        for k in ("queue", "compute_input", "compute_infer", "compute_output"):
            n = after[m][k][0] - before[m][k][0]
            ns = after[m][k][1] - before[m][k][1]
            row[f"{k}_ms_per_request"] = round(ns / max(n, 1) / 1e6, 2)
        out[m] = row
    return out


def py_spy_top(pid: int, seconds: float, out: Path) -> list[tuple[str, float]] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    raw = out / "api_py_spy.txt"
    subprocess.run([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw",
                    "--output", str(raw), "--nonblocking"], check=True, capture_output=True)
    own, total = collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        own[stack.split(";")[-1]] += n
    return [(frame, round(100 * n / total, 1)) for frame, n in own.most_common(25)]


def ort_profile(det: Path, mt: Path, photos: list[Path], out: Path) -> dict:
    import onnxruntime as ort

    from pipeline.inprocess import InProcessPipeline

    pipe = InProcessPipeline(det, mt, threads=1)
    per_op: dict[str, float] = collections.Counter()
    for name in ("detector", "multitask"):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(out / f"ort_{name}")
        setattr(pipe, name, ort.InferenceSession(str(det if name == "detector" else mt), opts,
                                                 providers=["CPUExecutionProvider"]))
    for p in photos:
        pipe.analyze(p.read_bytes())
    for name in ("detector", "multitask"):
        trace = json.loads(Path(getattr(pipe, name).end_profiling()).read_text())
        for ev in trace:
            if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
                per_op[f"{name}:{ev['args'].get('op_name')}"] += ev["dur"] / 1000
    return {k: round(v, 1) for k, v in per_op.most_common(20)}


async def _drive(url: str, datas: list[bytes], concurrency: int, seconds: float) -> dict:
    return (await benchmark.run_api(url, datas, (concurrency,), seconds))[f"c{concurrency}"]


def _cpu_per_image(cpu_before: dict, cpu_after: dict, images: int) -> dict:
    return {f"{k}_cpu_ms_per_image": round((cpu_after[k] - cpu_before[k]) * 1000 / max(images, 1), 2)
            for k in cpu_before}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-class", default="1080p", choices=list(photo_sets.SIZE_CLASSES))
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--ort", action="store_true", help="also onnxruntime's per-operator profile")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "var" / "profile")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    photos = photo_sets.build(benchmark.DATA, PROJECT_ROOT / "var" / "bench" / "photos", [args.size_class])[args.size_class]
    datas = [ph.read_bytes() for ph in photos]
    repo, det, mt = benchmark.published_models()
    report: dict = {"size_class": args.size_class, "concurrency": args.concurrency, "load_before": benchmark.load_average()}
    with tempfile.TemporaryDirectory() as work, serving(repo, Path(work) / "triton") as server:
        api, url = api_process.start_api(server.grpc_url, Path(work) / "api", **benchmark.API_ENV)
        try:
            asyncio.run(_drive(url, datas, args.concurrency, 3))  # warm-up
            before = triton_stats(server.http_url)
            watched = {"api": [api.pid], "triton": api_cost.tree(server.process.pid)}
            cpu_before = {k: api_cost.cpu_seconds(v) for k, v in watched.items()}
            spy = {}

            async def both():
                loop = asyncio.get_running_loop()
                spy_task = loop.run_in_executor(None, py_spy_top, api.pid, args.seconds, args.out)
                load = await _drive(url, datas, args.concurrency, args.seconds)
                spy["top"] = await spy_task
                return load

            load = asyncio.run(both())
            report["api"] = {k: v for k, v in load.items() if not k.startswith("_")}  # not the raw latencies
            cpu_after = {k: api_cost.cpu_seconds(v) for k, v in watched.items()}
            report["cpu"] = _cpu_per_image(cpu_before, cpu_after, load["images"])
            report["triton"] = stats_delta(before, triton_stats(server.http_url))
            report["api_py_spy_own_time_percent"] = spy["top"]
        finally:
            api_process.stop(api)
    if args.ort:
        report["onnxruntime_ms_per_op"] = ort_profile(det, mt, photos, args.out)
    report["load_after"] = benchmark.load_average()
    (args.out / f"profile_{args.size_class}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
