"""Admission control: a bounded number of image slots in flight per worker.

An image request takes one slot before its body is read; /analyze/batch grows its hold to one
slot per image once it knows how many it carries (`grow`). Beyond `max_inflight`, up to
`max_waiting` requests wait (at most `max_wait_s`) for their slots, first come first served;
everything past that gets 503 `overloaded` with Retry-After. So a flood costs each worker a
fixed amount of memory and CPU instead of an unbounded queue in front of Triton, and a batch
of 16 photos counts as 16 requests, not one.
"""

from __future__ import annotations

import asyncio
from collections import deque

from api import metrics
from api.auth import IMAGE_PATHS
from api.errors import Overloaded, api_error_response
from core.settings import AdmissionSettings

SCOPE_KEY = "fa.admission"  # the request's Ticket, for routes that grow their hold


class Slots:
    """A counting semaphore whose holders take several units at once, in arrival order (a
    large batch at the head is not overtaken forever by single photos)."""

    def __init__(self, total: int):
        self.total = self.free = total
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    def try_take(self, n: int) -> bool:
        if not self._waiters and self.free >= n:
            self.free -= n
            metrics.ADMISSION_SLOTS.inc(n)
            return True
        return False

    async def take(self, n: int) -> None:
        if self.try_take(n):
            return
        entry = (n, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry[1].done() and not entry[1].cancelled():
                self.give(n)  # granted just as the waiter gave up
            else:
                self._waiters.remove(entry)
                self._wake()  # it may have blocked smaller requests behind it
            raise

    def give(self, n: int) -> None:
        self.free += n
        metrics.ADMISSION_SLOTS.dec(n)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.free:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self.free -= n
                metrics.ADMISSION_SLOTS.inc(n)
                fut.set_result(None)


class Ticket:
    """The slots one request holds; released by the middleware when the response is done."""

    def __init__(self, admission: Admission):
        self.admission, self.held = admission, 0

    async def grow(self, n: int) -> int:
        """Hold `n` slots in all (at most the worker's total, which a larger batch then has to
        itself) and return how many are held; raises Overloaded when they do not come in time."""
        adm = self.admission
        n = min(n, adm.settings.max_inflight)
        if n <= self.held or adm.slots.try_take(n - self.held):
            self.held = max(n, self.held)
            return self.held
        # give back what is held and wait for all n at once: two batches each holding part of
        # what they need and waiting for the rest would deadlock
        adm.slots.give(self.held)
        self.held = 0
        await adm.acquire(n, "batch")
        self.held = n
        return n


class Admission:
    def __init__(self, app, settings: AdmissionSettings):
        self.app = app
        self.settings = settings
        self._slots: Slots | None = None
        self.waiting = 0

    @property
    def slots(self) -> Slots:
        if self._slots is None:  # created on the worker's event loop, at its first request
            self._slots = Slots(self.settings.max_inflight)
        return self._slots

    def _overloaded(self, why: str) -> Overloaded:
        exc = Overloaded(f"the service is busy ({why}); retry after {self.settings.retry_after_s} s")
        exc.retry_after = self.settings.retry_after_s
        metrics.REJECTED.labels("overloaded").inc()
        return exc

    async def acquire(self, n: int, what: str = "request") -> None:
        """n slots now, or after a bounded wait, or Overloaded."""
        if self.slots.try_take(n):
            return
        if self.waiting >= self.settings.max_waiting:
            raise self._overloaded("queue full")
        self.waiting += 1
        try:
            async with asyncio.timeout(self.settings.max_wait_s):
                await self.slots.take(n)
        except TimeoutError:
            raise self._overloaded(f"{what} waited too long") from None
        finally:
            self.waiting -= 1

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in IMAGE_PATHS:
            return await self.app(scope, receive, send)
        try:
            await self.acquire(1)
        except Overloaded as exc:
            return await api_error_response(exc)(scope, receive, send)
        ticket = Ticket(self)
        ticket.held = 1
        scope[SCOPE_KEY] = ticket
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.give(ticket.held)


async def hold_for_images(scope, n: int) -> int:
    """Called by /analyze/batch once it knows its size: n slots held (or Overloaded, 503);
    returns how many images may be in flight at once."""
    ticket: Ticket | None = scope.get(SCOPE_KEY)
    return n if ticket is None else await ticket.grow(n)
