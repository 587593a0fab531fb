"""API keys (header X-API-Key) and a per-key rate limit.

Keys are never stored: settings (FA_AUTH_KEY_HASHES) and the api_keys table hold sha256
digests. Off by default locally, on in the docker compose stack. The rate limit is a token
bucket per key and per worker process (with N workers a key gets up to N times the rate).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import Request

from api.errors import RateLimited, Unauthorized


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Buckets:
    def __init__(self, per_minute: int):
        self.rate = per_minute / 60.0
        self.capacity = float(max(per_minute, 1))
        self.state: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        now = time.monotonic()
        tokens, last = self.state.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1:
            self.state[key] = (tokens, now)
            return False
        self.state[key] = (tokens - 1, now)
        return True


async def require_api_key(request: Request) -> None:
    """FastAPI dependency for protected routes."""
    services = request.app.state.services
    auth = services.settings.auth
    path = request.url.path
    if not auth.enabled or (path == "/health" and not auth.protect_health):
        return
    key = request.headers.get("x-api-key", "")
    if not key:
        raise Unauthorized("missing X-API-Key header")
    digest = key_hash(key)
    allowed = {h.strip().lower() for h in auth.key_hashes.split(",") if h.strip()}
    known = any(hmac.compare_digest(digest, h) for h in allowed) or await services.repo.api_key_exists(digest)
    if not known:
        raise Unauthorized("invalid API key")
    if not request.app.state.buckets.take(digest):
        raise RateLimited(f"rate limit of {auth.rate_limit_per_minute} requests per minute exceeded")
