"""Gallery matching: time per face and recall@1 against exact search, 10k to 1M identities.

Synthetic identities: random unit vectors; a query is a noisy copy of one of them (a person
seen again; noise 1.5 puts its cosine to the original near 0.55, like a real second photo),
normalised, so the right answer is known and exact search finds it. Each query is
searched on its own, as /analyze does per face.

    python -m loadtests.gallery_benchmark [--sizes 10000 100000 1000000] [--queries 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from api.matching import Gallery
from core.settings import PROJECT_ROOT


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure(n: int, queries: int, noise: float = 1.5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    gallery_vecs = unit(rng.standard_normal((n, 128), np.float32))
    picks = rng.integers(0, n, queries)
    q = unit(gallery_vecs[picks] + noise * unit(rng.standard_normal((queries, 128), np.float32)))
    exact = faiss.IndexFlatIP(128)
    exact.add(gallery_vecs)
    truth = exact.search(q, 1)[1][:, 0]

    g = Gallery()
    t0 = time.perf_counter()
    g.load([f"p{i}" for i in range(n)], ["unknown"] * n, gallery_vecs)
    build_s = time.perf_counter() - t0
    lat, hits = [], 0
    for i in range(queries):
        t = time.perf_counter()
        m = g.search(q[i:i + 1], threshold=-1.0)[0]
        lat.append(time.perf_counter() - t)
        hits += m is not None and m.person_id == f"p{truth[i]}"
    lat_ms = np.asarray(lat) * 1000
    return {"identities": n, "index": "pq-fastscan+rerank" if n >= g.ann_threshold else "exact",
            "build_s": round(build_s, 1), "p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
            "p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
            "recall_at_1": round(hits / queries, 4),
            "true_match_similarity_mean": round(float(np.mean(np.sum(q * gallery_vecs[truth], 1))), 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.gallery_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "benchmark" / "gallery.json")
    args = p.parse_args(argv)
    rows = []
    for n in args.sizes:
        print(f"[gallery] {n} identities ...", flush=True)
        rows.append(measure(n, args.queries))
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
