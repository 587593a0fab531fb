"""Upload checks done before a byte goes to Triton: size, real type, pixel count.

The body size is capped while it streams in (api.main.BodySizeLimit); here the file part is
read in chunks with the same cap, its type is taken from magic bytes (not the file name or
the part's Content-Type), and the pixel count from the image header.
"""

from __future__ import annotations

from fastapi import UploadFile

from api.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from api.settings import UploadSettings
from pipeline.decode import ImageDecodeError, UnsupportedImageType, check_header

CHUNK = 1 << 16


async def read_image(upload: UploadFile, limits: UploadSettings) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limits.max_bytes:
            raise PayloadTooLarge(f"the file is larger than the limit of {limits.max_bytes} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    try:
        check_header(data, limits.max_pixels, limits.min_side)  # no pixel is decoded here
    except UnsupportedImageType as exc:
        raise UnsupportedMediaType(str(exc)) from None
    except ImageDecodeError as exc:
        raise InvalidImage(str(exc)) from None
    return data
