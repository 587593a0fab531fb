"""`python -m api`: the API server on FA_HOST:FA_PORT, FA_WORKERS uvicorn workers, FA_LOG_LEVEL.

The container's command and `make run` both start the server this way, so the settings
decide where it listens (an image command that hard-codes them would ignore the environment).
"""

from __future__ import annotations

import uvicorn

from core.settings import get_settings


def main() -> None:
    server = get_settings().server
    # bounded connections per worker (uvicorn answers 503 past them; admission control inside
    # the app answers 503/429 long before), short keep-alive, no access log (client addresses)
    uvicorn.run("api.main:app", host=server.host, port=server.port, workers=server.workers,
                log_level=server.log_level, access_log=False, limit_concurrency=server.limit_concurrency,
                timeout_keep_alive=server.timeout_keep_alive_s, timeout_graceful_shutdown=20)


if __name__ == "__main__":
    main()
