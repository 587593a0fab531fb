"""Upload checks done before a byte goes to Triton: size, real type, pixel count, decode cost.

The body size is capped while it streams in (api.main.BodySizeLimit, and read_raw_body for a
raw image body); a multipart file part is checked against the same cap, its type is taken from
magic bytes (not the file name or the part's Content-Type), and the pixel count and decode
cost from the header. The header walk is bounded (pipeline.decode caps segments, chunks and
scans) and still runs in a worker thread, a few at a time, so a hostile file never stalls the
event loop that /health and every other request share.
"""

from __future__ import annotations

import asyncio
import functools
import weakref

import anyio
from fastapi import Request, UploadFile
from starlette.requests import ClientDisconnect

from api.errors import ClientGone, ImageTooCostly, InvalidImage, PayloadTooLarge, UnsupportedMediaType
from core.settings import UploadSettings
from pipeline.decode import ImageDecodeError, ImageTooCostlyError, UnsupportedImageType, check_header

_limiters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _limiter(threads: int) -> anyio.CapacityLimiter:
    """One limiter per event loop (per worker)."""
    loop = asyncio.get_running_loop()
    if loop not in _limiters:
        _limiters[loop] = anyio.CapacityLimiter(threads)
    return _limiters[loop]


def _too_large(limits: UploadSettings) -> PayloadTooLarge:
    return PayloadTooLarge(f"the file is larger than the limit of {limits.max_bytes} bytes")


async def check_image(data: bytes, limits: UploadSettings) -> bytes:
    """`data` if it is an image we read within every limit; the API error otherwise."""
    if len(data) > limits.max_bytes:
        raise _too_large(limits)
    check = functools.partial(check_header, data, **limits.decode_limits().kwargs())
    try:
        await anyio.to_thread.run_sync(check, limiter=_limiter(limits.check_threads))  # no pixel decoded
    except UnsupportedImageType as exc:
        raise UnsupportedMediaType(str(exc)) from None
    except ImageTooCostlyError as exc:
        raise ImageTooCostly(str(exc)) from None
    except ImageDecodeError as exc:
        raise InvalidImage(str(exc)) from None
    return data


async def read_image(upload: UploadFile, limits: UploadSettings) -> bytes:
    """A multipart file part (already received by the form parser): size, then one read."""
    if upload.size is not None and upload.size > limits.max_bytes:
        raise _too_large(limits)
    return await check_image(await upload.read(limits.max_bytes + 1), limits)


async def read_raw_body(request: Request, limits: UploadSettings) -> bytes:
    """The request body as the image file itself (Content-Type image/* or
    application/octet-stream): no form parsing, no spooling, no copy but the final join. Too
    large is 413 from Content-Length before anything is read, or as soon as the stream passes
    the limit."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_bytes:
        raise _too_large(limits)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_bytes:
                raise _too_large(limits)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client closed the connection during the upload") from None
    return await check_image(chunks[0] if len(chunks) == 1 else b"".join(chunks), limits)
