"""CPU cost per face of face_multitask graphs, side by side: A/B in one process, interleaved.

Each graph runs on one onnxruntime thread over the aligned faces our detector finds in the
photos of ../shared/data (real chips, not noise), in batches of --batch, round after round in
alternating order. Reported per graph: the thread's CPU time per face (what the graph costs;
steady on a shared machine, where wall time moves with the load) and wall time, medians over
rounds, and the ratio to the first graph; the load average before and after.

    python -m loadtests.multitask_benchmark A.onnx B.onnx [--batch 1 8] [--rounds 7]
    (no file: the published face_multitask alone)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from core.settings import SHARED_DATA
from loadtests import benchmark
from pipeline import contract as C


def real_chips(detector: Path, data: Path = SHARED_DATA) -> np.ndarray:
    """Aligned canvases of every face found in the photos of ../shared/data (no mirrors)."""
    from export.bootstrap import calibration_chips

    photos = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    chips = calibration_chips(detector, photos)
    return chips[: len(chips) // 2]  # calibration_chips appends the mirror images


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure(paths: list[Path], chips: np.ndarray, batch: int, rounds: int) -> list[dict]:
    sessions = [session(p) for p in paths]
    batches = [chips[i:i + batch] for i in range(0, len(chips) - batch + 1, batch)]
    faces = sum(len(b) for b in batches)
    for s in sessions:
        s.run(None, {C.MT_INPUT: batches[0]})
    cpu, wall = [[] for _ in paths], [[] for _ in paths]
    for r in range(rounds):
        order = range(len(paths)) if r % 2 == 0 else reversed(range(len(paths)))
        for k in order:
            t, c = time.perf_counter(), time.thread_time()
            for b in batches:
                sessions[k].run(None, {C.MT_INPUT: b})
            cpu[k].append(1000 * (time.thread_time() - c) / faces)
            wall[k].append(1000 * (time.perf_counter() - t) / faces)
    base = float(np.median(cpu[0]))
    return [{"graph": str(p), "batch": batch, "faces": faces,
             "cpu_ms_per_face": round(float(np.median(c)), 2), "wall_ms_per_face": round(float(np.median(w)), 2),
             "cpu_ratio": round(float(np.median(c)) / base, 3)} for p, c, w in zip(paths, cpu, wall)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.multitask_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("graphs", nargs="*", type=Path)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    _, det, mt = benchmark.published_models()
    chips = real_chips(det)
    graphs = args.graphs or [mt]
    print(f"{len(chips)} faces from {SHARED_DATA}; load before {benchmark.load_average()}")
    for batch in args.batch:
        for row in measure(graphs, chips, batch, args.rounds):
            print(f"batch {batch}  {row['cpu_ms_per_face']:6.2f} ms CPU/face ({row['cpu_ratio']:.3f}x)  "
                  f"wall {row['wall_ms_per_face']:6.2f}  {row['graph']}")
    print(f"load after {benchmark.load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
