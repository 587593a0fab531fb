"""The API under uvicorn in a child process on a free port, on an embedded SQLite database of
its own: what the benchmarks, the profiler and the OpenAPI fuzzing test talk to.

    proc, url = start_api(triton.grpc_url, tmp / "api", TRITON_TIMEOUT_S="600")
    ...
    stop(proc)

or, for a process started otherwise, wait_healthy(proc, url, timeout_s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from core.settings import PROJECT_ROOT
from tools.triton_local import free_port


def start_api(triton_grpc: str, data_dir: Path, *, workers: int = 1, cwd: Path = PROJECT_ROOT,
              timeout_s: float = 300.0, **env: str) -> tuple[subprocess.Popen, str]:
    """Start uvicorn and wait until /health answers (a busy machine can take minutes to import
    and start): (process, base URL). `env`: more variables for the API (TRITON_TIMEOUT_S, ...)."""
    port = free_port()
    env = dict(os.environ, TRITON_GRPC_URL=triton_grpc, FA_DATA_DIR=str(data_dir), **env)
    env.pop("MYSQL_HOST", None)  # never write to a real database
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers), "--no-access-log",
                             "--log-level", "warning"], env=env, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, timeout_s, what=f"the API from {cwd}")
    return proc, url


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, what: str = "the API") -> None:
    """Poll `url`/health until it answers 200; a process that exits or a timeout is an error
    (and the process is stopped)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.25)
    code = proc.poll()
    stop(proc)
    raise RuntimeError(f"{what} did not come up" + (f" (exited with {code})" if code is not None else ""))


def stop(proc: subprocess.Popen) -> None:
    """End a server we started; one still busy with abandoned requests after 30 s is killed."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
