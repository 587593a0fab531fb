"""How many identity writes per second one MySQL/MariaDB sustains, with N API workers.

Each /analyze that finds faces writes its sightings in one transaction. A photo whose faces all
match someone already in the gallery writes them without the database-wide gallery lock (each
matched person's row is locked instead); a photo with a new person takes the gallery lock
(MySQL GET_LOCK): replay other workers' changes, match again, insert the new unknown, bump
counts, insert detection rows, log the change (api/identity.py). With several API pods that
lock is shared by all of them, so what still runs under it bounds the cluster's write rate.

This drives IdentityService.identify() itself, N worker processes with C requests in flight
each, on a real database, with synthetic faces (random unit embeddings; a share of re-sightings
of people already in the gallery, the rest new people), so Triton is out of the measurement.
Side by side, in the same run: the same load as the code runs it, and with the gallery lock
skipped everywhere (unsafe: duplicate unknowns become possible; for measurement only) -- if the
second is much faster, the lock is the ceiling.

    python -m loadtests.identity_lock [--workers 1 2 4 8] [--seconds 10] [--concurrency 4]

MYSQL_HOST/PORT/USER/PASSWORD select the server (default 127.0.0.1:3306, root); each point
runs in a database of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from core.settings import PROJECT_ROOT, MySQLSettings, Settings

OUT = PROJECT_ROOT / "docs" / "benchmark"


def _settings(database: str) -> Settings:
    base = MySQLSettings()
    mysql = base.model_copy(update={"host": base.host or "127.0.0.1", "database": database,
                                    "pool_max": 16})
    return Settings().model_copy(update={"mysql": mysql})


def _unit(rng, n):
    v = rng.standard_normal((n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _analysis(embedding: np.ndarray):
    from api.inference import Analysis, Face

    face = Face(box=np.array([40, 40, 140, 160], np.float32), score=0.98, embedding=embedding,
                age=35.0, p_male=0.7, chip=np.full((144, 144, 3), 128, np.uint8),
                landmarks=np.array([[70, 80], [110, 80], [90, 100], [75, 125], [105, 125]], np.float32))
    return Analysis([face], 640, 480, model_version="1")


def _unlock(repo) -> None:
    """Measurement arm without the gallery lock: every transaction runs unlocked."""
    inner = repo.db.transaction
    repo.db.transaction = lambda locked=False, write=False: inner(False, write)


async def _seed(settings: Settings, people: np.ndarray) -> None:
    from api.identity import IdentityService
    from api.repository import Repository

    repo = Repository(settings)
    await repo.start()
    try:
        identity = IdentityService(repo, settings)
        await identity.load()
        for e in people:
            await identity.identify(_analysis(e))
    finally:
        await repo.close()


async def _worker(settings: Settings, people: np.ndarray, seconds: float, concurrency: int,
                  new_share: float, locked: bool, seed: int, ready, go) -> dict:
    from api.identity import IdentityService
    from api.repository import Repository

    repo = Repository(settings)
    await repo.start()
    if not locked:
        _unlock(repo)
    identity = IdentityService(repo, settings)
    await identity.load()
    rng = np.random.default_rng(seed)
    ready.set()
    while not go.is_set():
        await asyncio.sleep(0.005)
    deadline = time.perf_counter() + seconds
    latencies, new = [], 0

    async def one_client():
        nonlocal new
        while time.perf_counter() < deadline:
            if rng.random() < new_share:
                e, new = _unit(rng, 1)[0], new + 1
            else:  # a re-sighting: cosine about 0.71 to the stored embedding
                e = people[rng.integers(len(people))] + _unit(rng, 1)[0]
                e = (e / np.linalg.norm(e)).astype(np.float32)
            t = time.perf_counter()
            await identity.identify(_analysis(e))
            latencies.append(time.perf_counter() - t)

    cpu0 = time.process_time()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    cpu = time.process_time() - cpu0
    await repo.close()
    return {"writes": len(latencies), "new": new, "latencies": latencies, "cpu_s": cpu}


def _run_worker(args, ready, go, out):
    out.put(asyncio.run(_worker(*args, ready=ready, go=go)))


def _database(action: str, name: str) -> None:
    import pymysql

    mysql = _settings(name).mysql
    conn = pymysql.connect(host=mysql.host, port=mysql.port, user=mysql.user, password=mysql.password)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4" if action == "create"
                        else f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def _arm(settings: Settings, people: np.ndarray, workers: int, locked: bool, seconds: float,
         concurrency: int, new_share: float, seed: int) -> dict:
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(workers)]
    procs = [ctx.Process(target=_run_worker, args=(
        (settings, people, seconds, concurrency, new_share, locked, seed + i), readies[i], go, out))
        for i in range(workers)]
    for p in procs:
        p.start()
    for r in readies:
        r.wait(120)
    t0 = time.perf_counter()
    go.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    lat = np.asarray([x for r in results for x in r["latencies"]]) * 1000
    return {"writes": sum(r["writes"] for r in results), "wall_s": wall, "latencies_ms": lat,
            "new": sum(r["new"] for r in results), "cpu_s": sum(r["cpu_s"] for r in results)}


def measure(workers: int, seconds: float, concurrency: int, people_n: int, new_share: float,
            unlocked_arm: bool = True) -> list[dict]:
    """One database, seeded once; the arms run in ABBA order (locked, unlocked, unlocked,
    locked) so that drift in the machine's load falls on both alike."""
    name = f"fa_bench_{uuid.uuid4().hex[:8]}"
    _database("create", name)
    try:
        settings = _settings(name)
        people = _unit(np.random.default_rng(0), people_n)
        asyncio.run(_seed(settings, people))
        order = [True, False, False, True] if unlocked_arm else [True, True]
        runs: dict[bool, list[dict]] = {True: [], False: []}
        for i, locked in enumerate(order):
            runs[locked].append(_arm(settings, people, workers, locked, seconds / 2, concurrency,
                                     new_share, 100 * (i + 1)))
        rows = []
        for locked, arms in runs.items():
            if not arms:
                continue
            writes, wall = sum(a["writes"] for a in arms), sum(a["wall_s"] for a in arms)
            lat = np.concatenate([a["latencies_ms"] for a in arms])
            rows.append({"workers": workers, "lock": "as shipped" if locked else "none (unsafe)",
                         "in_flight": workers * concurrency, "writes": writes,
                         "writes_per_s": round(writes / wall, 1),
                         "new_people": sum(a["new"] for a in arms),
                         "p50_ms": round(float(np.percentile(lat, 50)), 1),
                         "p99_ms": round(float(np.percentile(lat, 99)), 1),
                         "worker_cpu_share": round(sum(a["cpu_s"] for a in arms) / wall
                                                   / (os.cpu_count() or 1), 2),
                         # the machine is shared: its load says how far absolute figures carry
                         "load_avg_1m": round(os.getloadavg()[0], 1)})
        return rows
    finally:
        _database("drop", name)


def _markdown(rows: list[dict], args) -> str:
    lines = [
        "# Identity writes and the gallery lock (`python -m loadtests.identity_lock`)",
        "",
        f"MariaDB on 127.0.0.1, this {os.cpu_count()}-core machine (shared with other work), "
        f"{args.seconds:.0f} s per arm in two halves run ABBA (locked, unlocked, unlocked, locked), {args.concurrency} requests in flight per worker, "
        f"{args.people} people in the gallery, {args.new_share:.0%} of faces new people. One write = "
        "one /analyze for a one-face photo (replay, match; a re-sighting: row lock, count bump, "
        "detection row; a new person: gallery lock, replay, match, unknown insert, detection row, "
        "change log).",
        "",
        "| workers | lock | in flight | writes/s | p50 ms | p99 ms | workers' CPU share | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['lock']} | {r['in_flight']} | {r['writes_per_s']} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['worker_cpu_share']} | {r.get('load_avg_1m', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.identity_lock", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--seconds", type=float, default=20.0, help="per arm and worker count (two halves)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight per worker")
    p.add_argument("--people", type=int, default=500, help="people in the gallery before the run")
    p.add_argument("--new-share", type=float, default=0.2, help="share of faces that are new people")
    p.add_argument("--no-unlocked", action="store_true", help="skip the lock-free comparison arm")
    p.add_argument("--out", type=Path, default=OUT, help="writes identity_lock.{json,md} here")
    args = p.parse_args(argv)
    rows = []
    for n in args.workers:
        for row in measure(n, args.seconds, args.concurrency, args.people, args.new_share,
                           unlocked_arm=not args.no_unlocked):
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "identity_lock.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "identity_lock.md").write_text(_markdown(rows, args))
    print(_markdown(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
