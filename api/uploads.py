"""Upload checks done before a byte goes to Triton: size, real type, pixel count, decode cost.

The body size is capped while it streams in (api.main.BodySizeLimit); here the file part is
read in chunks with the same cap, its type is taken from magic bytes (not the file name or
the part's Content-Type), and the pixel count and decode cost from the header. The header
walk is bounded (pipeline.decode caps segments, chunks and scans) and still runs in a worker
thread, a few at a time, so a hostile file never stalls the event loop that /health and
every other request share.
"""

from __future__ import annotations

import asyncio
import functools
import weakref

import anyio
from fastapi import UploadFile

from api.errors import ImageTooCostly, InvalidImage, PayloadTooLarge, UnsupportedMediaType
from core.settings import UploadSettings
from pipeline.decode import ImageDecodeError, ImageTooCostlyError, UnsupportedImageType, check_header

CHUNK = 1 << 16


_limiters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _limiter(threads: int) -> anyio.CapacityLimiter:
    """One limiter per event loop (per worker)."""
    loop = asyncio.get_running_loop()
    if loop not in _limiters:
        _limiters[loop] = anyio.CapacityLimiter(threads)
    return _limiters[loop]


async def read_image(upload: UploadFile, limits: UploadSettings) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limits.max_bytes:
            raise PayloadTooLarge(f"the file is larger than the limit of {limits.max_bytes} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
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
