"""Benchmark photos in the sizes users send, built from the labelled photos we have.

Users send phone photos (12 MP), CCTV and webcam frames (1080p, 720p) and small web images.
Our labelled photos are small (median 0.24 MP), so the benchmark scales the group and
single-face photos of ../shared/data to each size class and stores them as JPEG quality 90,
which is how cameras and browsers send them. Scaling keeps the aspect ratio and sets the pixel
count of the class (a 16:9 photo becomes exactly 1920x1080); the originals are a class of their
own, unchanged. Upscaled photos compress better than real camera photos (a 12 MP one here is
about 1.2 MB, a phone's 3-5 MB); the decoding cost, which is what the size costs us, follows
the pixel count (measured: 51-65 ms for 12 MP with or without added sensor-like noise).
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

# class -> target pixel count (None: the photos as they are)
SIZE_CLASSES: dict[str, int | None] = {
    "original": None,
    "720p": 1280 * 720,
    "1080p": 1920 * 1080,
    "12MP": 4000 * 3000,
}
JPEG_QUALITY = 90


def original_photos(data: Path) -> list[Path]:
    """The 38 photos of detection/ and verification/ (the peers' published figures use them)."""
    return sorted((data / "detection" / "images").glob("*")) + sorted((data / "verification" / "images").rglob("*.*"))


def scalable_photos(data: Path) -> list[Path]:
    """Distinct photos with faces: the group and single-face photos of detection/ (15, 1-6 faces
    each) and one frame of the webcam video in verification/ (its 12 frames are near-duplicates)."""
    with open(data / "detection" / "boxes.csv", newline="") as f:
        with_faces = sorted({r["path"] for r in csv.DictReader(f)})
    frames = sorted((data / "verification" / "images" / "pyfeat_video_woman").glob("*.jpg"))
    return [data / "detection" / p for p in with_faces] + frames[:1]


def scale_to(rgb_or_bgr: np.ndarray, pixels: int) -> np.ndarray:
    h, w = rgb_or_bgr.shape[:2]
    s = (pixels / (h * w)) ** 0.5
    size = (max(1, round(w * s)), max(1, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LANCZOS4
    return cv2.resize(rgb_or_bgr, size, interpolation=interp)


def build(data: Path, out: Path, classes: list[str] | None = None, limit: int | None = None) -> dict[str, list[Path]]:
    """{class: photos}; scaled classes are written once under `out/<class>/` and reused."""
    sets: dict[str, list[Path]] = {}
    for name in classes or list(SIZE_CLASSES):
        pixels = SIZE_CLASSES[name]
        if pixels is None:
            sets[name] = original_photos(data)[:limit] if limit else original_photos(data)
            continue
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for src in scalable_photos(data)[:limit] if limit else scalable_photos(data):
            dst = folder / f"{src.stem}.jpg"
            if not dst.exists():
                img = cv2.imread(str(src), cv2.IMREAD_COLOR)  # PNG alpha/palette -> BGR as a viewer shows it
                ok, enc = cv2.imencode(".jpg", scale_to(img, pixels), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise RuntimeError(f"could not encode {src}")
                tmp = dst.with_suffix(".tmp")
                tmp.write_bytes(enc.tobytes())
                tmp.replace(dst)
            paths.append(dst)
        sets[name] = paths
    return sets


def describe(paths: list[Path]) -> dict:
    """Median and largest megapixels and file size of a set (from the headers)."""
    from PIL import Image

    mp, mb = [], []
    for p in paths:
        with Image.open(p) as im:
            mp.append(im.size[0] * im.size[1] / 1e6)
        mb.append(p.stat().st_size / 1e6)
    return {"photos": len(paths), "median_mp": round(float(np.median(mp)), 2), "max_mp": round(max(mp), 2),
            "median_mb": round(float(np.median(mb)), 2)}
