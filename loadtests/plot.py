"""Plot a locust CSV history: throughput and p50/p95/p99 latency over time, as one PNG.

    python -m loadtests.plot loadtests/results/locust_stats_history.csv loadtests/results/locust.png
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here
import matplotlib.pyplot as plt  # noqa: E402


def plot(history: Path, out: Path) -> Path:
    with open(history, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    if not rows:
        raise SystemExit(f"{history} has no Aggregated rows")
    t0 = int(rows[0]["Timestamp"])
    t = [int(r["Timestamp"]) - t0 for r in rows]

    def col(name):
        return [float(r[name]) if r[name] not in ("", "N/A") else float("nan") for r in rows]

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(t, col("Requests/s"), label="requests/s")
    ax1.plot(t, col("Failures/s"), label="failures/s", color="tab:red")
    ax1.set_ylabel("per second")
    ax1.legend(loc="upper left")
    for p in ("50%", "95%", "99%"):
        ax2.plot(t, col(p), label=f"p{p[:-1]}")
    ax2.set_ylabel("latency, ms")
    ax2.set_xlabel("seconds since start")
    ax2.legend(loc="upper left")
    fig.suptitle("Face Analytics load test")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


if __name__ == "__main__":
    print(plot(Path(sys.argv[1]), Path(sys.argv[2])))
