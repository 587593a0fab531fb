"""Inputs whose decode cost is unbounded unless the service bounds it, generated on the fly
(nothing stored): each with the status and error code the API must answer with.

Sizes follow the issue's measurements: a 9.9 MB JPEG marker followed by zeros, a progressive
JPEG with thousands of scans claiming 14 MP (libjpeg-turbo #284), a 6324x6324 RLE8 BMP,
headers made of tens of thousands of tiny segments, chunks or blocks.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def many_windows_photo(group_photo, width: int = 5000) -> bytes:
    """A real group photo tiled 4x3 and enlarged to about 17 MP (a JPEG under the upload limit):
    asked for faces down to 12 px, face_pipeline sends the detector a few dozen windows, seconds
    of work on a CPU; a request that is slow for legitimate reasons."""
    photo = Image.open(group_photo).convert("RGB")
    w, h = photo.size
    sheet = Image.new("RGB", (w * 4, h * 3))
    for i in range(12):
        sheet.paste(photo, ((i % 4) * w, (i // 4) * h))
    sheet = sheet.resize((width, round(width * sheet.height / sheet.width)))
    return encode(sheet, "JPEG", quality=80)


def jpeg_marker_then_zeros(size: int = 9_900_000) -> bytes:
    return b"\xff\xd8\xff" + bytes(size)


def _set_jpeg_size(jpeg: bytes, w: int, h: int) -> bytes:
    i = next(jpeg.index(m) for m in (b"\xff\xc0", b"\xff\xc2") if m in jpeg)
    return jpeg[:i + 5] + struct.pack(">HH", h, w) + jpeg[i + 9:]


def jpeg_many_scans(scans: int = 3000, w: int = 4320, h: int = 3240) -> bytes:
    """A progressive JPEG whose scans are repeated `scans` times, claiming w x h (14 MP)."""
    small = encode(Image.new("RGB", (64, 64), (90, 140, 200)), "JPEG", progressive=True, quality=90)
    first = small.index(b"\xff\xda")
    body = small[first:-2]  # every scan (and the tables between them), without EOI
    per_copy = body.count(b"\xff\xda")
    return _set_jpeg_size(small[:first], w, h) + body * (scans // per_copy + 1) + b"\xff\xd9"


def jpeg_progressive_claiming(w: int = 8000, h: int = 5000) -> bytes:
    """A few normal scans, but at 40 MP the progressive coefficient buffer is over the budget."""
    small = encode(Image.new("RGB", (64, 64), (90, 140, 200)), "JPEG", progressive=True, quality=90)
    return _set_jpeg_size(small, w, h)


def jpeg_many_comments(count: int = 60_000) -> bytes:
    small = encode(Image.new("RGB", (64, 64), "white"), "JPEG")
    return small[:2] + b"\xff\xfe\x00\x03x" * count + small[2:]


def png_many_chunks(count: int = 80_000) -> bytes:
    """Tiny unknown ancillary chunks before the image data: Pillow handles each in Python."""
    real = encode(Image.new("RGB", (64, 64), "white"), "PNG")
    ihdr_end = 8 + 25
    chunk = png_chunk(b"zzZz", b"")
    return real[:ihdr_end] + chunk * count + real[ihdr_end:]


def gif_many_blocks(count: int = 300_000) -> bytes:
    """A comment extension of one-byte sub-blocks before the first image."""
    real = encode(Image.new("P", (64, 64), 0), "GIF")
    i = 13 + (3 << ((real[10] & 7) + 1) if real[10] & 0x80 else 0)
    return real[:i] + b"\x21\xfe" + b"\x01x" * count + b"\x00" + real[i:]


def bmp_rle8(w: int = 6324, h: int = 6324) -> bytes:
    """An RLE8 BMP: a few KB claiming 40 MP, decoded by Pillow's pure-Python RLE decoder."""
    palette = b"".join(struct.pack("<BBBB", v, v, v, 0) for v in range(256))
    row = b"\xff\x80" * (w // 255) + bytes([w % 255, 0x80]) + b"\x00\x00"
    pixels = row * 40 + b"\x00\x01"  # 40 rows, then end of bitmap
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def bmp_magic_photocd() -> bytes:
    """Bytes typed BMP by their magic, laid out so that Pillow's PhotoCD plugin would take them."""
    data = bytearray(b"BM" + bytes(2046) + b"PCD_IPI" + bytes(4096))
    return bytes(data)


def tiff_many_tags(count: int = 60_000) -> bytes:
    entries = b"".join(struct.pack("<HHII", 65000, 3, 1, 0) for _ in range(count))
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", count) + entries + b"\x00\x00\x00\x00"


# (name, bytes factory, status, error code)
CASES = (
    ("jpeg marker + 9.9 MB of zeros", jpeg_marker_then_zeros, 400, "invalid_image"),
    ("jpeg with 3000 progressive scans at 14 MP", jpeg_many_scans, 400, "image_too_costly"),
    ("progressive jpeg at 40 MP over the memory budget", jpeg_progressive_claiming, 400, "image_too_costly"),
    ("jpeg with 60000 comment segments", jpeg_many_comments, 400, "image_too_costly"),
    ("png with 80000 unknown chunks", png_many_chunks, 400, "image_too_costly"),
    ("gif with 300000 extension sub-blocks", gif_many_blocks, 400, "image_too_costly"),
    ("rle8 bmp at 6324x6324", bmp_rle8, 400, "image_too_costly"),
    ("bmp magic laid out for photocd", bmp_magic_photocd, 400, "invalid_image"),
    ("tiff with 60000 tags", tiff_many_tags, 400, "image_too_costly"),
)
