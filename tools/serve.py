"""`make run`: start the local Triton, then the API on FA_HOST:FA_PORT; stop both on exit.

A Triton already answering on TRITON_HTTP_URL's port is reused (and left running).
"""

from __future__ import annotations

import signal
import subprocess
import sys

from core.settings import get_settings
from tools.triton_local import TritonServer


def main() -> int:
    s = get_settings()
    triton = TritonServer(repository=s.paths.model_repository, http_port=s.triton.http_port,
                          grpc_port=s.triton.grpc_port, metrics_port=s.triton.metrics_port)
    owned = not triton.is_ready()
    if owned:
        print(f"starting Triton (http {triton.http_port}, grpc {triton.grpc_port}, "
              f"metrics {triton.metrics_port}) ...", flush=True)
        triton.start(timeout_s=240)
    print(f"Triton ready; API on http://{s.server.host}:{s.server.port} (docs at /docs)", flush=True)
    api = subprocess.Popen([sys.executable, "-m", "api"])  # FA_HOST, FA_PORT, FA_WORKERS, FA_LOG_LEVEL

    stopped = {"by_signal": False}

    def _forward(signum, _frame):
        stopped["by_signal"] = True
        api.send_signal(signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    try:
        code = api.wait()
    finally:
        if owned:
            triton.stop()
    return 0 if stopped["by_signal"] else code  # Ctrl-C / SIGTERM is a clean stop


if __name__ == "__main__":
    sys.exit(main())
