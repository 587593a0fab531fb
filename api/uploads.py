"""Upload checks done before a byte goes to Triton: size, real type, pixel count.

The body size is capped while it streams in (api.main.BodySizeLimit); here the file part is
read in chunks with the same cap, its type is taken from magic bytes (not the file name or
the part's Content-Type), and the pixel count from the image header.
"""

from __future__ import annotations

import io
import warnings

from fastapi import UploadFile
from PIL import Image

from api.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from api.settings import UploadSettings
from pipeline.decode import SUPPORTED, sniff_format

CHUNK = 1 << 16


async def read_image(upload: UploadFile, limits: UploadSettings) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limits.max_bytes:
            raise PayloadTooLarge(f"the file is larger than the limit of {limits.max_bytes} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise InvalidImage("the file is empty")
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedMediaType(f"not a supported image type (supported: {', '.join(SUPPORTED)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w, h = Image.open(io.BytesIO(data)).size  # header only; no pixels decoded
    except Exception:  # noqa: BLE001 - any header failure is the client's corrupt file
        raise InvalidImage(f"the {kind} data is corrupt or truncated") from None
    if w * h > limits.max_pixels:
        raise InvalidImage(f"image has {w}x{h} pixels, more than the limit of {limits.max_pixels}")
    if min(w, h) < limits.min_side:
        raise InvalidImage(f"image is {w}x{h}, smaller than {limits.min_side} pixels on a side")
    return data
