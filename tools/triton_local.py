"""Run the real ``tritonserver`` binary from the nvidia-pytriton wheel on this CPU host.

The wheel ships the server and its python backend but with RPATHs relative to the wheel, so
we copy the backend plus the stub for our Python next to the data dir and point
LD_LIBRARY_PATH at the wheel's bundled libraries. The venv's ``bin`` goes first on PATH
because the python backend stub finds its interpreter (and numpy, onnxruntime, cv2) that way.

    python -m tools.triton_local run      # foreground, Ctrl-C stops it cleanly
    python -m tools.triton_local start    # background, waits until ready, writes a pid file
    python -m tools.triton_local stop
    python -m tools.triton_local status
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import get_settings
from pipeline import contract

DEFAULT_MODELS = (contract.DETECTOR, contract.MULTITASK, contract.PIPELINE)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def inference_counts(metrics_url: str, models=DEFAULT_MODELS) -> dict[str, tuple[float, float]]:
    """Per model, Triton's (nv_inference_count, nv_inference_exec_count): inferences and the
    executions they were batched into, summed over the model's versions (0 for a model not seen)."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()

    def value(name: str, model: str) -> float:
        found = re.findall(rf'^{name}{{model="{re.escape(model)}",version="\d+"}} (\S+)$', text, re.M)
        return sum(float(v) for v in found)

    return {m: (value("nv_inference_count", m), value("nv_inference_exec_count", m)) for m in models}


def batching_ratio(before: dict, after: dict) -> dict[str, float]:
    """Inferences per execution between two inference_counts snapshots, per model."""
    return {m: round((after[m][0] - before[m][0]) / max(after[m][1] - before[m][1], 1), 2) for m in after}


def _wheel_root() -> Path:
    # locate, don't import: only the wheel's files are used, and importing pytriton needs
    # its Python dependencies, which we don't install
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed; run `make setup`")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def server_binary() -> Path:
    return _wheel_root() / "tritonserver" / "bin" / "tritonserver"


def _libs_dir() -> Path:
    return _wheel_root().parent / "nvidia_pytriton.libs"


def prepare_backends(dest: Path) -> Path:
    """Copy the python backend and the stub matching this interpreter into ``dest``."""
    src = _wheel_root() / "tritonserver"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / py / "triton_python_backend_stub"
    target = dest / "python"
    if not (target / "triton_python_backend_stub").exists():
        target.mkdir(parents=True, exist_ok=True)
        for f in (src / "backends" / "python").iterdir():
            if f.is_file():
                shutil.copy2(f, target / f.name)
        shutil.copy2(stub, target / "triton_python_backend_stub")
    return dest


@dataclass
class TritonServer:
    repository: Path
    http_port: int = 8010
    grpc_port: int = 8001
    metrics_port: int = 8002
    models: tuple[str, ...] = DEFAULT_MODELS
    log_file: Path | None = None
    # loopback address to bind: 127.0.0.2 etc. let two servers share port numbers, as pods do
    host: str = "127.0.0.1"
    extra_args: tuple[str, ...] = ()
    work_dir: Path = field(default_factory=lambda: get_settings().paths.data_dir / "triton")
    process: subprocess.Popen | None = None

    @classmethod
    def on_free_ports(cls, repository: Path, work_dir: Path, **kw) -> "TritonServer":
        """A server of its own beside any other (tests, benchmarks, evaluation)."""
        return cls(repository=repository, http_port=free_port(), grpc_port=free_port(),
                   metrics_port=free_port(), work_dir=work_dir, **kw)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        backends = prepare_backends(self.work_dir / "backends")
        cmd = [
            str(server_binary()),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            # explicit: `python -m export publish` loads new versions through the repository API
            "--model-control-mode=explicit",
            "--allow-metrics=true",
            "--metrics-interval-ms=1000",
            "--log-verbose=0",
        ]
        cmd += [f"--load-model={m}" for m in self.models]
        return cmd + list(self.extra_args)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env["LD_LIBRARY_PATH"] = str(_libs_dir()) + os.pathsep + env.get("LD_LIBRARY_PATH", "")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def launch(self) -> "TritonServer":
        """Start the process without waiting (several servers can then load at once)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file or (self.work_dir / "tritonserver.log"), "ab")
        self.process = subprocess.Popen(
            self.command(), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def start(self, timeout_s: float = 120.0) -> "TritonServer":
        self.launch().wait_ready(timeout_s)
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with code {self.process.returncode}; "
                    f"see {self.log_file or self.work_dir / 'tritonserver.log'}"
                )
            if self.is_ready():
                return
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: for outage tests."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM lets Triton drain in-flight requests and unload models; SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def serving(repository: Path, work_dir: Path, timeout_s: float = 240, **kw):
    """A TritonServer on free ports for the length of a `with` block."""
    server = TritonServer.on_free_ports(repository, work_dir, **kw).start(timeout_s)
    try:
        yield server
    finally:
        server.stop()


def _server_from_settings(args: argparse.Namespace) -> TritonServer:
    s = get_settings()
    return TritonServer(
        repository=Path(args.repository or s.paths.model_repository),
        http_port=args.http_port or s.triton.http_port,
        grpc_port=args.grpc_port or s.triton.grpc_port,
        metrics_port=args.metrics_port or s.triton.metrics_port,
    )


def _pid_file() -> Path:
    return get_settings().paths.data_dir / "triton" / "tritonserver.pid"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.triton_local", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "start", "stop", "status"])
    p.add_argument("--repository", help="model repository (default: FA_MODEL_REPOSITORY)")
    p.add_argument("--http-port", type=int)
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    args = p.parse_args(argv)
    server = _server_from_settings(args)
    pid_file = _pid_file()

    if args.command == "status":
        ready = server.is_ready()
        print(f"triton at {server.http_url}: {'ready' if ready else 'not ready'}")
        return 0 if ready else 1
    if args.command == "stop":
        if not pid_file.exists():
            print("no pid file; nothing to stop")
            return 0
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(120):
                os.kill(pid, 0)
                time.sleep(0.25)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
        print("triton stopped")
        return 0
    if server.is_ready():
        print(f"triton already serving at {server.http_url}")
        return 0
    print(f"starting tritonserver (http {server.http_port}, grpc {server.grpc_port}, "
          f"metrics {server.metrics_port}) on {server.repository} ...", flush=True)
    server.start(args.timeout)
    print("triton ready", flush=True)
    if args.command == "start":
        pid_file.write_text(str(server.process.pid))
        return 0
    # run: stay in the foreground until a signal, then stop cleanly
    stop = {"now": False}

    def _on_signal(*_):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not stop["now"] and server.process.poll() is None:
        time.sleep(0.5)
    server.stop()
    return 0 if stop["now"] else (server.process.returncode or 1)


if __name__ == "__main__":
    sys.exit(main())
