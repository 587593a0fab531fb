"""Work for a client that has gone is stopped, not finished.

uvicorn does not cancel a handler when its client disconnects. For the image paths this
middleware watches the connection once the body has been read and sets the request's
`client_gone` event on `http.disconnect`; api.inference races its Triton call against that
event and cancels the gRPC call, which Triton sees as a cancelled request (dropped from the
queue, or stopped between detector calls by face_pipeline). Only the Triton call is cut
short: nothing has been written yet then, and the handler ends with ClientGone (499, which
nobody receives) instead of writing identities for an answer nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextvars import ContextVar

from api.auth import IMAGE_PATHS
from api.errors import ClientGone

_client_gone: ContextVar[asyncio.Event | None] = ContextVar("fa_client_gone", default=None)


class WatchDisconnect:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in IMAGE_PATHS:
            return await self.app(scope, receive, send)
        gone, body_done = asyncio.Event(), asyncio.Event()

        async def app_receive():
            if body_done.is_set():  # the watcher owns the connection's receive() from here on
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                body_done.set()
            return message

        async def watch():
            await body_done.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        token = _client_gone.set(gone)
        watcher = asyncio.create_task(watch())
        try:
            await self.app(scope, app_receive, send)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            _client_gone.reset(token)


async def unless_client_gone(coro):
    """The result of `coro`, or ClientGone (with `coro` cancelled) if the client disconnects
    first."""
    task = asyncio.ensure_future(coro)
    gone = _client_gone.get()
    if gone is None:
        return await task
    waiter = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled itself: so is the call
        waiter.cancel()
        task.cancel()
        raise
    waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()  # cancels the gRPC call: Triton sees the request cancelled
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientGone("the client closed the connection")
