"""Encoded bytes -> upright RGB uint8, refusing what is not a usable photo.

Everything that can be checked before a pixel is decoded is checked first, with bounded
work: the type comes from magic bytes and pins Pillow to that one plugin; JPEG, PNG, GIF and
TIFF headers are walked here with caps on segments, chunks and scans (Pillow's own header
parsers skip junk a byte at a time and keep every chunk, in Python); compressed BMP is
refused (Pillow's RLE decoder is pure Python); the pixel count and an estimate of the memory
the decode needs are checked against limits. So a 30000x30000 PNG of a few KB, a JPEG with
thousands of progressive scans or a megabyte of tiny PNG chunks is refused in microseconds.
"""

from __future__ import annotations

import io
import re
import struct
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.limits import MAX_DECODE_BYTES, MAX_HEADER_ITEMS, MAX_JPEG_SCANS, MAX_PIXELS, DecodeLimits  # noqa: F401

# We enforce our own pixel limit below; Pillow's bomb check would fire at a different size.
Image.MAX_IMAGE_PIXELS = None

MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
SUPPORTED = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
# the one Pillow plugin each sniffed type may be decoded by (bytes typed BMP never reach PhotoCD)
PIL_FORMATS = {"jpeg": ["JPEG"], "png": ["PNG"], "gif": ["GIF"], "bmp": ["BMP"], "tiff": ["TIFF"],
               "webp": ["WEBP"]}

STRIP_ROWS = 256  # conversions to RGB work in strips of rows: no full-size intermediate copies


class ImageDecodeError(ValueError):
    """The bytes are not an image we can read; the message is safe to show to a user."""


class ImageTooLargeError(ImageDecodeError):
    pass


class ImageTooCostlyError(ImageDecodeError):
    """Readable in principle, but its decode cost is out of bounds (scans, chunks, memory)."""


class UnsupportedImageType(ImageDecodeError):
    pass


def sniff_format(data: bytes) -> str | None:
    """The image type from magic bytes, never from a file name or a header."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, kind in MAGIC:
        if data.startswith(magic):
            return kind
    return None


# -- bounded header walks --------------------------------------------------------------------
_JPEG_FILL = re.compile(rb"\xff+")
# the end of entropy-coded data: 0xFF followed by anything but a stuffed zero, RSTn or fill
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
MAX_JPEG_JUNK = 4096  # bytes between segments that libjpeg (and Pillow) would skip


def _corrupt(kind: str, why: str = "") -> ImageDecodeError:
    return ImageDecodeError(f"the {kind} data is corrupt or truncated{why}")


def _too_many(what: str, limit: int) -> ImageTooCostlyError:
    return ImageTooCostlyError(f"the image has more than {limit} {what}; refused as too costly to decode")


def _walk_jpeg(data: bytes, max_items: int, max_scans: int) -> dict:
    """Segments up to EOI: counts scans, finds the frame header, bounds the junk skipped."""
    n, i, items, scans, junk = len(data), 2, 0, 0, 0
    info = {"scans": 0, "components": 3, "progressive": False}
    while i < n:
        if data[i] != 0xFF:
            j = data.find(b"\xff", i, i + MAX_JPEG_JUNK - junk + 1)
            if j < 0:
                raise _corrupt("jpeg", " (no marker where one is due)")
            junk += j - i
            i = j
        i = _JPEG_FILL.match(data, i).end()
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0x00):
            continue
        if i + 2 > n:
            break
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2:
            raise _corrupt("jpeg")
        items += 1
        if items > max_items:
            raise _too_many("header segments", max_items)
        if marker in _JPEG_SOF and i + 7 < n:
            info["components"] = data[i + 7]
            info["progressive"] = marker in (0xC2, 0xC6, 0xCA, 0xCE)
        i += length
        if marker == 0xDA:  # SOS: skip the entropy-coded data that follows, in C
            scans += 1
            if scans > max_scans:
                raise _too_many("scans", max_scans)
            m = _JPEG_NEXT_MARKER.search(data, i)
            if m is None:
                break  # truncated after the last scan: the decoders cope, as they do today
            i = m.start()
    info["scans"] = scans
    return info


def _walk_png(data: bytes, max_items: int) -> dict:
    """Chunks up to IEND: ancillary chunks and all chunks capped, IHDR read."""
    n, i, ancillary, total = len(data), 8, 0, 0
    info: dict = {}
    limit = max_items * 32  # image data split into many IDAT chunks is normal, up to a point
    while i + 8 <= n:
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        total += 1
        if kind not in (b"IDAT", b"fdAT"):
            ancillary += 1
        if ancillary > max_items:
            raise _too_many("PNG chunks", max_items)
        if total > limit:
            raise _too_many("PNG chunks", limit)
        if kind == b"IHDR" and length >= 13 and i + 21 <= n:
            info["bit_depth"], info["color_type"] = data[i + 16], data[i + 17]
        if kind == b"IEND":
            break
        i += 12 + length
    return info


def _walk_gif(data: bytes, max_items: int) -> None:
    """Extension sub-blocks before the first image, which Pillow reads one by one."""
    if len(data) < 13:
        raise _corrupt("gif")
    flags = data[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = 0
    while i < len(data) and data[i] == 0x21:  # extension introducer
        i += 2
        while i < len(data) and data[i]:
            blocks += 1
            if blocks > max_items * 8:
                raise _too_many("GIF extension blocks", max_items * 8)
            i += data[i] + 1
        i += 1


def _check_bmp(data: bytes) -> None:
    if len(data) >= 34 and int.from_bytes(data[14:18], "little") >= 40:
        compression = int.from_bytes(data[30:34], "little")
        if compression in (1, 2, 4, 5):  # RLE8, RLE4, embedded JPEG, embedded PNG
            raise ImageTooCostlyError("compressed (RLE, JPEG or PNG) BMP is not supported; "
                                      "send an uncompressed BMP or another format")


def _check_tiff(data: bytes, max_items: int) -> None:
    fmt = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise _corrupt("tiff")
    offset = struct.unpack(fmt + "I", data[4:8])[0]
    if offset + 2 > len(data):
        raise _corrupt("tiff")
    if struct.unpack(fmt + "H", data[offset:offset + 2])[0] > max_items:
        raise _too_many("TIFF tags", max_items)


# Pillow's storage: 1 byte for L/P/1, 2 for I;16*, 4 for every other mode (RGB is padded to 4)
def _pillow_pixel_bytes(mode: str) -> int:
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def decode_bytes(kind: str, mode: str, w: int, h: int, header: dict) -> int:
    """Peak memory estimate of decode_image for this image."""
    px = w * h
    if kind == "jpeg":
        # libjpeg keeps every DCT coefficient (2 bytes a sample) until the last scan
        multi = header.get("progressive") or header.get("scans", 1) > 1
        coefficients = px * 2 * header.get("components", 3) if multi else 0
        # OpenCV's path: decoded BGR converted in place; Pillow's: its image + the RGB array
        return coefficients + px * (3 if mode in ("RGB", "L") else 7)
    # decoded image + the RGB array (strip conversion keeps the rest small); a rotation copies
    return px * max(_pillow_pixel_bytes(mode) + 3, 6)


def _open(data: bytes, max_pixels: int, min_side: int, max_scans: int = MAX_JPEG_SCANS,
          max_decode_bytes: int = MAX_DECODE_BYTES) -> tuple[Image.Image, str, dict]:
    """Open lazily (header only) and enforce type, structure, pixel count, size and cost limits."""
    if not data:
        raise ImageDecodeError("the file is empty")
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedImageType(f"not a supported image type (supported: {', '.join(SUPPORTED)})")
    header: dict = {}
    if kind == "jpeg":
        header = _walk_jpeg(data, MAX_HEADER_ITEMS, max_scans)
    elif kind == "png":
        header = _walk_png(data, MAX_HEADER_ITEMS)
    elif kind == "gif":
        _walk_gif(data, MAX_HEADER_ITEMS)
    elif kind == "bmp":
        _check_bmp(data)
    elif kind == "tiff":
        _check_tiff(data, MAX_HEADER_ITEMS)
    try:
        img = Image.open(io.BytesIO(data), formats=PIL_FORMATS[kind])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise _corrupt(kind) from exc
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLargeError(f"image has {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
    if min(w, h) < min_side:
        raise ImageDecodeError(f"image is {w}x{h}, smaller than {min_side} pixels on a side")
    need = decode_bytes(kind, img.mode, w, h, header)
    if need > max_decode_bytes:
        raise ImageTooCostlyError(
            f"decoding this {w}x{h} {img.mode} {kind} would need about {need >> 20} MiB, more than the "
            f"budget of {max_decode_bytes >> 20} MiB; send a smaller or 8-bit baseline image")
    return img, kind, header


def check_header(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int = 1,
                 max_scans: int = MAX_JPEG_SCANS, max_decode_bytes: int = MAX_DECODE_BYTES) -> tuple[str, int, int]:
    """(type, width, height) from the header alone; the same checks decode_image makes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img, kind, _ = _open(data, max_pixels, min_side, max_scans, max_decode_bytes)
    return kind, *img.size


def _strip_converter(img: Image.Image):
    """A function strip -> HxWx3 uint8 for img's mode, built once per image."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # high bit depth greyscale: keep the top 8 bits of the used range
        peak = max(int(img.getextrema()[1]), 1)
        shift = max(peak.bit_length() - 8, 0)
        return lambda s: (np.asarray(s, np.uint32 if mode == "I" else np.uint16) >> shift).clip(0, 255).astype(np.uint8)[..., None]
    if mode == "F":
        lo, hi = img.getextrema()
        scale = 255.0 / max(float(hi) - float(lo), 1e-6)
        return lambda s: ((np.asarray(s, np.float32) - lo) * scale).clip(0, 255).astype(np.uint8)[..., None]
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        def composite(s):
            # transparent pixels become white, as a viewer would show them
            a = np.asarray(s.convert("RGBA"), np.uint16)
            alpha = a[..., 3:]
            return ((a[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
        return composite
    return lambda s: np.asarray(s.convert("RGB"))


def _to_rgb(img: Image.Image) -> np.ndarray:
    """RGB uint8 without full-size intermediates: one output array, filled in strips."""
    if img.mode == "RGB":
        return np.asarray(img)
    w, h = img.size
    out = np.empty((h, w, 3), np.uint8)
    convert = _strip_converter(img)
    for y in range(0, h, STRIP_ROWS):
        out[y:y + STRIP_ROWS] = convert(img.crop((0, y, w, min(h, y + STRIP_ROWS))))
    return out


# EXIF orientation -> the same operation on an HxWxC array as Pillow's exif_transpose
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


# libjpeg decodes at 1/2, 1/4 or 1/8 in the DCT domain: most of the IDCT and colour work skipped
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int = 1,
                 max_scans: int = MAX_JPEG_SCANS, max_decode_bytes: int = MAX_DECODE_BYTES) -> np.ndarray:
    """RGB uint8 HxWx3 with the EXIF orientation applied (first frame of animations)."""
    return decode_reduced(data, max_pixels, min_side, max_scans=max_scans, max_decode_bytes=max_decode_bytes)[0]


def decode_reduced(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int = 1,
                   reduction=None, max_scans: int = MAX_JPEG_SCANS,
                   max_decode_bytes: int = MAX_DECODE_BYTES) -> tuple[np.ndarray, float, float]:
    """(RGB uint8, fx, fy): the upright image, decoded at 1/k per side when it is a JPEG and
    `reduction(width, height)` (from the header) says k > 1; fx, fy = full-size pixels per decoded
    pixel. Other formats have no cheaper path in Pillow or OpenCV (a PNG or WebP is decoded
    whole before any resize), so they come at full size, fx = fy = 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img, kind, _ = _open(data, max_pixels, min_side, max_scans, max_decode_bytes)
        try:
            if img.format == "JPEG" and img.mode in ("RGB", "L"):
                # the common case: OpenCV's decoder is ~40% faster and applies EXIF orientation
                k = reduction(*img.size) if reduction else 1
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED.get(k, cv2.IMREAD_COLOR))
                if bgr is None:
                    raise ImageDecodeError(f"the {kind} data is corrupt or truncated")
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: no second copy
                if k == 1:
                    return rgb, 1.0, 1.0
                w, h = img.size
                if img.getexif().get(0x0112) in _TRANSPOSED:
                    w, h = h, w
                return rgb, w / rgb.shape[1], h / rgb.shape[0]
            orientation = img.getexif().get(0x0112, 1)
            img.load()
            rgb = _to_rgb(img)
            img.close()  # the decoded pixels go before a rotation copies the RGB array
            del img
            if orientation in _ORIENT:
                rgb = _ORIENT[orientation](rgb)
        except ImageDecodeError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise ImageDecodeError(f"the {kind} data is corrupt or truncated") from exc
    return np.ascontiguousarray(rgb, dtype=np.uint8), 1.0, 1.0
