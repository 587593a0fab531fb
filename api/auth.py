"""API keys (header X-API-Key), checked before a byte of the body is read, and rate limits.

Keys are never stored: settings (FA_AUTH_KEY_HASHES) and the api_keys table hold sha256
digests. Off by default locally, on in the docker compose stack. AuthGate is ASGI middleware,
so a caller without a valid key never gets its upload parsed. Rate limits are token buckets
per worker process (with N workers a caller gets up to N times the rate): per key for
authenticated calls, per client address for everything without a valid key; image requests
(/analyze, /register) cost more tokens than reads.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from api.errors import ApiError, DatabaseUnavailable, RateLimited, Unauthorized, api_error_response
from core.settings import AuthSettings

IMAGE_PATHS = ("/analyze", "/register", "/analyze/batch")
DOC_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
STATIC_PREFIX = "/ui"  # the console's static files: the page asks for the key itself
MAX_TRACKED = 10_000  # buckets kept per worker; the oldest go first


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def request_cost(path: str, auth: AuthSettings) -> int:
    return auth.image_request_cost if path in IMAGE_PATHS else 1


class Buckets:
    """Token buckets: `per_minute` tokens a minute, at most `burst` saved up."""

    def __init__(self, per_minute: int, burst: int | None = None, clock=time.monotonic):
        self.clock = clock  # injectable so that tests can move time without sleeping
        self.rate = per_minute / 60.0
        self.capacity = float(max(min(per_minute, burst or per_minute), 1))
        self.state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, cost: int = 1) -> bool:
        now = self.clock()
        tokens, last = self.state.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        ok = tokens >= min(cost, self.capacity)
        self.state[key] = (tokens - cost if ok else tokens, now)  # re-inserted: newest last
        while len(self.state) > MAX_TRACKED:
            del self.state[next(iter(self.state))]
        return ok


class AuthGate:
    """ASGI middleware: key check and rate limits on the request line and headers alone."""

    def __init__(self, app, auth: AuthSettings):
        self.app = app
        self.auth = auth
        self.keys = Buckets(auth.rate_limit_per_minute, auth.rate_limit_burst)
        self.anonymous = Buckets(auth.anonymous_rate_limit_per_minute,
                                 max(auth.image_request_cost, auth.anonymous_rate_limit_per_minute // 4))
        self.allowed = {h.strip().lower() for h in auth.key_hashes.split(",") if h.strip()}
        self.known: dict[str, float] = {}  # digest -> until when a database hit is trusted

    def _open(self, path: str) -> bool:
        return (path in DOC_PATHS or path == STATIC_PREFIX or path.startswith(STATIC_PREFIX + "/")
                or (path == "/health" and not self.auth.protect_health)
                or (path == "/metrics" and not self.auth.protect_metrics))

    async def _valid(self, scope, digest: str) -> bool:
        if any(hmac.compare_digest(digest, h) for h in self.allowed):
            return True
        if self.known.get(digest, 0) > time.monotonic():
            return True
        services = getattr(scope["app"].state, "services", None)
        if services is None or not await services.repo.api_key_exists(digest):
            return False
        if len(self.known) >= MAX_TRACKED:
            self.known.clear()
        self.known[digest] = time.monotonic() + self.auth.key_cache_s
        return True

    async def _check(self, scope) -> None:
        path = scope["path"]
        cost = request_cost(path, self.auth)
        client = (scope.get("client") or ("?", 0))[0]
        if self._open(path):
            if not self.anonymous.take(client, cost):
                raise RateLimited("too many requests from this address; slow down")
            return
        key = dict(scope["headers"]).get(b"x-api-key", b"").decode("latin-1")
        if not key:  # failed attempts drain the address's bucket too: no free guessing
            if not self.anonymous.take(client, cost):
                raise RateLimited("too many requests from this address; slow down")
            raise Unauthorized("missing X-API-Key header")
        digest = key_hash(key)
        if not await self._valid(scope, digest):
            if not self.anonymous.take(client, cost):
                raise RateLimited("too many requests from this address; slow down")
            raise Unauthorized("invalid API key")
        if not self.keys.take(digest, cost):
            raise RateLimited(f"rate limit of {self.auth.rate_limit_per_minute} tokens per minute exceeded "
                              f"(image requests cost {self.auth.image_request_cost})")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.auth.enabled:
            return await self.app(scope, receive, send)
        try:
            await self._check(scope)
        except (ApiError, DatabaseUnavailable) as exc:
            return await api_error_response(exc)(scope, receive, send)
        await self.app(scope, receive, send)
