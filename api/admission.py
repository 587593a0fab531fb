"""Admission control: a bounded number of image requests in flight per worker.

Beyond `max_inflight`, up to `max_waiting` requests wait (at most `max_wait_s`) for a slot;
everything past that gets 503 `overloaded` with Retry-After at once, before its body is read.
So a flood costs each worker a fixed amount of memory and CPU instead of an unbounded queue
in front of Triton, and the requests that are admitted finish in bounded time.
"""

from __future__ import annotations

import asyncio

from api import metrics
from api.auth import IMAGE_PATHS
from api.errors import Overloaded, api_error_response
from core.settings import AdmissionSettings


class Admission:
    def __init__(self, app, settings: AdmissionSettings):
        self.app = app
        self.s = settings
        self.slots: asyncio.Semaphore | None = None
        self.waiting = 0

    def _reject(self, why: str):
        exc = Overloaded(f"the service is busy ({why}); retry after {self.s.retry_after_s} s")
        exc.retry_after = self.s.retry_after_s
        metrics.REJECTED.labels("overloaded").inc()
        return api_error_response(exc)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in IMAGE_PATHS:
            return await self.app(scope, receive, send)
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.s.max_inflight)
        if self.slots.locked():
            if self.waiting >= self.s.max_waiting:
                return await self._reject("queue full")(scope, receive, send)
            self.waiting += 1
            try:
                async with asyncio.timeout(self.s.max_wait_s):
                    await self.slots.acquire()
            except TimeoutError:
                return await self._reject("waited too long")(scope, receive, send)
            finally:
                self.waiting -= 1
        else:
            await self.slots.acquire()
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()
