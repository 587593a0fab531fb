"""What the API process costs per /analyze, in CPU milliseconds, beside Triton doing the work.

On a small machine the API and Triton share the cores, so every millisecond of CPU the API
spends on a request (reading the upload, parsing it, gRPC, the database) is taken from the
models. This measures it directly: the CPU time (utime + stime from /proc, every thread, and
for Triton its python-backend stub processes too) each process used over a closed-loop window,
divided by the images answered in that window.

    python -m loadtests.api_cost --base main --classes original 1080p --seconds 15 --rounds 2

One Triton; two APIs on SQLite: the `--base` git revision (extracted as options_benchmark
does) and this working tree. Each round measures, per size class and in turn (so the arms
share the machine's load): Triton face_pipeline directly over gRPC, the base API with a
multipart upload, and the current API with each upload it accepts (multipart, the raw image
body, JSON base64). Prints a markdown table and writes docs/benchmark/api_cost.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.settings import PROJECT_ROOT
from loadtests import benchmark, photo_sets
from loadtests.benchmark import DATA, DEADLINE_S, load_average, published_models
from loadtests.options_benchmark import base_and_current

TICK = os.sysconf("SC_CLK_TCK")
UPLOADS = ("multipart", "raw", "json")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()  # the fields after "(comm)"
    except OSError:
        return None


def tree(pid: int) -> list[int]:
    """pid and all its descendants (Triton's python backend runs one stub process per instance)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for p in pids:
        if (st := _stat(p)) is not None:
            total += int(st[11]) + int(st[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICK


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def closed_loop(call, datas: list[bytes], concurrency: int, seconds: float, watch: dict[str, list[int]]) -> dict:
    """benchmark._closed_loop, plus the CPU each watched process tree used in the window."""
    def meter():
        before = {k: cpu_seconds(v) for k, v in watch.items()}
        client_before = self_cpu()

        def per_image(images: int) -> dict:
            n = max(images, 1)
            out = {f"{k}_cpu_ms_per_image": round((cpu_seconds(pids) - before[k]) * 1000 / n, 2)
                   for k, pids in watch.items()}
            return out | {"client_cpu_ms_per_image": round((self_cpu() - client_before) * 1000 / n, 2)}
        return per_image

    return await benchmark._closed_loop(call, datas, concurrency, seconds, warmups=2, meter=meter)


def api_call(client, upload: str):
    """call(data) -> faces, sending the photo as `upload` (the request the route sees; the
    response is read the same way for every arm)."""
    async def call(data: bytes) -> int:
        if upload == "multipart":
            r = await client.post("/analyze", files={"file": ("photo.jpg", data, "image/jpeg")})
        elif upload == "raw":
            r = await client.post("/analyze", content=data, headers={"content-type": "image/jpeg"})
        else:
            r = await client.post("/analyze", json={"image": base64.b64encode(data).decode()})
        r.raise_for_status()
        return len(r.json()["faces"])
    return call


async def measure_api(url: str, upload: str, datas, concurrency, seconds, watch) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=DEADLINE_S,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)) as client:
        return await closed_loop(api_call(client, upload), datas, concurrency, seconds, watch)


async def measure_triton(grpc_url: str, datas, concurrency, seconds, watch) -> dict:
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(grpc_url)
    try:
        return await closed_loop(benchmark.pipeline_call(client, aio), datas, concurrency, seconds, watch)
    finally:
        await client.close()


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(float(np.mean(vals)), 2) if vals else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.api_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="main", help="git revision to compare with (default main)")
    p.add_argument("--classes", nargs="+", default=["original", "1080p"], choices=list(photo_sets.SIZE_CLASSES))
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--uploads", nargs="+", default=list(UPLOADS), choices=UPLOADS,
                   help="how the current API is sent the photo (the base always gets multipart)")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "benchmark" / "api_cost.json")
    args = p.parse_args(argv)

    repo, _, _ = published_models()
    sets = photo_sets.build(DATA, PROJECT_ROOT / "var" / "bench" / "photos", args.classes)
    arms = ["triton", "base multipart"] + [f"current {u}" for u in args.uploads]
    result = {"base": args.base, "base_commit": subprocess.run(["git", "rev-parse", args.base], cwd=PROJECT_ROOT,
                                                                capture_output=True, text=True).stdout.strip(),
              "concurrency": args.concurrency, "seconds": args.seconds, "rounds": args.rounds, "cpus": os.cpu_count(),
              "load_before": load_average(), "classes": {}}
    with base_and_current(repo, args.base, DEADLINE_S) as (server, (base_proc, base_url), (cur_proc, cur_url)):
        triton_pids = tree(server.process.pid)
        for name, paths in sets.items():
            datas = [x.read_bytes() for x in paths]
            runs: dict[str, list[dict]] = {a: [] for a in arms}
            cls = {"set": photo_sets.describe(paths), "load_before": load_average(), "runs": runs}
            for rnd in range(args.rounds):
                for arm in arms:
                    if arm == "triton":
                        r = asyncio.run(measure_triton(server.grpc_url, datas, args.concurrency, args.seconds,
                                                       {"triton": triton_pids}))
                    else:
                        which, upload = arm.split()
                        proc, url = (base_proc, base_url) if which == "base" else (cur_proc, cur_url)
                        r = asyncio.run(measure_api(url, upload, datas, args.concurrency, args.seconds,
                                                    {"api": [proc.pid], "triton": triton_pids}))
                    r["load"] = load_average()
                    runs[arm].append(r)
                    print(f"[api_cost] {name} round {rnd + 1} {arm}: {r['images_per_s']} images/s, "
                          f"API {r.get('api_cpu_ms_per_image', '-')} ms CPU/image, Triton "
                          f"{r['triton_cpu_ms_per_image']} ms CPU/image, errors {r['errors']}, load {r['load']}",
                          flush=True)
            cls["load_after"] = load_average()
            cls["summary"] = {a: {k: _mean(rs, k) for k in ("images_per_s", "p50_ms", "api_cpu_ms_per_image",
                                                             "triton_cpu_ms_per_image", "client_cpu_ms_per_image")}
                              for a, rs in runs.items()}
            tri = cls["summary"]["triton"]["images_per_s"]
            for a, s in cls["summary"].items():
                s["vs_triton"] = round(s["images_per_s"] / tri, 3) if tri and s["images_per_s"] else None
            result["classes"][name] = cls
    result["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = [f"/analyze at concurrency {result['concurrency']}, {result['rounds']} rounds x {result['seconds']:.0f} s "
             f"per arm, base {result['base']} ({result['base_commit'][:8]}), {result['cpus']} cores; load "
             f"{result['load_before']} -> {result['load_after']}", ""]
    for name, cls in result["classes"].items():
        d = cls["set"]
        lines += [f"### {name}: {d['photos']} photos, median {d['median_mp']} MP, {d['median_mb']} MB "
                  f"(load {cls['load_before']} -> {cls['load_after']})", "",
                  "| arm | images/s | / Triton c16 | p50 ms | API CPU ms/image | Triton CPU ms/image | "
                  "load generator CPU ms/image |", "|---|---|---|---|---|---|---|"]
        for arm, s in cls["summary"].items():
            lines.append(f"| {arm} | {s['images_per_s']} | {s['vs_triton']} | {s['p50_ms']} | "
                         f"{s['api_cpu_ms_per_image'] if s['api_cpu_ms_per_image'] is not None else '-'} | "
                         f"{s['triton_cpu_ms_per_image']} | {s['client_cpu_ms_per_image']} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
