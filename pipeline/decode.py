"""Encoded bytes -> upright RGB uint8, refusing what is not a usable photo.

Pillow reads the header first, so the pixel limit is checked before a single pixel is
decoded: a 30000x30000 PNG of a few KB is refused without allocating gigabytes.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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


class ImageDecodeError(ValueError):
    """The bytes are not an image we can read; the message is safe to show to a user."""


class ImageTooLargeError(ImageDecodeError):
    pass


def sniff_format(data: bytes) -> str | None:
    """The image type from magic bytes, never from a file name or a header."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, kind in MAGIC:
        if data.startswith(magic):
            return kind
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: keep the top 8 bits of the used range
        a = np.asarray(img, dtype=np.uint32)
        peak = max(int(a.max()), 1)
        shift = max(peak.bit_length() - 8, 0)
        return Image.fromarray((a >> shift).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6) * 255
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # transparent pixels become white, as a viewer would show them
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


class UnsupportedImageType(ImageDecodeError):
    pass


def _open(data: bytes, max_pixels: int, min_side: int) -> tuple[Image.Image, str]:
    """Open lazily (header only) and enforce type, pixel count and size limits."""
    if not data:
        raise ImageDecodeError("the file is empty")
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedImageType(f"not a supported image type (supported: {', '.join(SUPPORTED)})")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"the {kind} data is corrupt or truncated") from exc
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLargeError(f"image has {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
    if min(w, h) < min_side:
        raise ImageDecodeError(f"image is {w}x{h}, smaller than {min_side} pixels on a side")
    return img, kind


def check_header(data: bytes, max_pixels: int = 40_000_000, min_side: int = 1) -> tuple[str, int, int]:
    """(type, width, height) from the header alone; the same checks decode_image makes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img, kind = _open(data, max_pixels, min_side)
    return kind, *img.size


# libjpeg decodes at 1/2, 1/4 or 1/8 in the DCT domain: most of the IDCT and colour work skipped
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def decode_image(data: bytes, max_pixels: int = 40_000_000, min_side: int = 1) -> np.ndarray:
    """RGB uint8 HxWx3 with the EXIF orientation applied (first frame of animations)."""
    return decode_reduced(data, max_pixels, min_side)[0]


def decode_reduced(data: bytes, max_pixels: int = 40_000_000, min_side: int = 1,
                   reduction=None) -> tuple[np.ndarray, float, float]:
    """(RGB uint8, fx, fy): the upright image, decoded at 1/k per side when it is a JPEG and
    `reduction(width, height)` (from the header) says k > 1; fx, fy = full-size pixels per decoded
    pixel. Other formats have no cheaper path in Pillow or OpenCV (a PNG or WebP is decoded
    whole before any resize), so they come at full size, fx = fy = 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img, kind = _open(data, max_pixels, min_side)
        try:
            if img.format == "JPEG" and img.mode in ("RGB", "L"):
                # the common case: OpenCV's decoder is ~40% faster and applies EXIF orientation
                k = reduction(*img.size) if reduction else 1
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED.get(k, cv2.IMREAD_COLOR))
                if bgr is None:
                    raise ImageDecodeError(f"the {kind} data is corrupt or truncated")
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if k == 1:
                    return rgb, 1.0, 1.0
                w, h = img.size
                if img.getexif().get(0x0112) in _TRANSPOSED:
                    w, h = h, w
                return rgb, w / rgb.shape[1], h / rgb.shape[0]
            img.load()
            rgb = _to_rgb(ImageOps.exif_transpose(img))
        except ImageDecodeError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError(f"the {kind} data is corrupt or truncated") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), 1.0, 1.0
