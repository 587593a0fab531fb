"""Labelled group photos of our own: real faces of ../shared/data pasted at known positions and
sizes over real backgrounds, so recall and precision can be measured by face size.

Each face is cut from a photo of detection/ around its hand-checked box (boxes.csv), with an
elliptical, feathered mask so that no rectangle edge is pasted, and with every other labelled
face of that photo masked out (a stray half face would be an unlabelled true face). A face is
scaled so that its box is `size` pixels wide; the box scales with it, which is what makes the
ground truth exact. Backgrounds are the no-face photos of no_face/, scaled to cover the canvas.
Sizes are box widths (a box's shorter side), in pixels of the generated photo.

    python -m export.group_photos OUT_DIR     # writes the evaluation set as JPEGs + boxes.csv
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

MIN_SOURCE_WIDTH = 40  # smaller labelled faces are too blurry to stand in for larger ones
MAX_UPSCALE = 1.5  # a source face is used for a size at most 1.5x its own width
MARGIN_X, MARGIN_Y = 0.55, 0.45  # context kept around the box (hair, chin, neck), per side
JPEG_QUALITY = 90
# face-size buckets (box width, px of the photo) the evaluation reports
SIZE_EDGES = (16, 20, 24, 32, 48, 64, 96, 128, 256)


@dataclass(frozen=True)
class FaceSource:
    patch: np.ndarray  # RGB uint8, the face with its context
    alpha: np.ndarray  # float32 0..1, same height/width
    box: tuple[float, float, float, float]  # x, y, w, h of the face inside the patch
    name: str


@dataclass
class GroupPhoto:
    name: str
    layout: str
    rgb: np.ndarray
    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2, float32
    sizes: np.ndarray  # [N] the width each face was pasted at (the box's width, +-1 px of rounding)
    _jpeg: bytes | None = field(default=None, repr=False)

    @property
    def jpeg(self) -> bytes:
        if self._jpeg is None:
            buf = io.BytesIO()
            Image.fromarray(self.rgb).save(buf, "JPEG", quality=JPEG_QUALITY)
            self._jpeg = buf.getvalue()
        return self._jpeg


def _read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def load_sources(data: Path) -> list[FaceSource]:
    root = data / "detection"
    by_photo: dict[str, list[tuple[float, ...]]] = {}
    with open(root / "boxes.csv", newline="") as f:
        for r in csv.DictReader(f):
            by_photo.setdefault(r["path"], []).append(tuple(float(r[k]) for k in ("x", "y", "width", "height")))
    sources = []
    for path, boxes in sorted(by_photo.items()):
        rgb = _read_rgb(root / path)
        h, w = rgb.shape[:2]
        for k, (x, y, bw, bh) in enumerate(boxes):
            if bw < MIN_SOURCE_WIDTH:
                continue
            x0, y0 = max(0, int(x - MARGIN_X * bw)), max(0, int(y - MARGIN_Y * bh))
            x1, y1 = min(w, int(np.ceil(x + bw + MARGIN_X * bw))), min(h, int(np.ceil(y + bh + MARGIN_Y * bh)))
            # opaque over the face and a little around it, fading out towards the patch edge
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            cx, cy = x + bw / 2, y + bh / 2
            r = np.sqrt(((xx - cx) / (bw * 0.5)) ** 2 + ((yy - cy) / (bh * 0.5)) ** 2)
            alpha = np.clip((2.0 - r) / 0.8, 0, 1)  # 1 up to 1.2 half-axes, 0 from 2.0
            for j, (ox, oy, ow, oh) in enumerate(boxes):
                if j != k:  # hide the neighbours: only this face is labelled in the paste
                    mx0, my0 = int(ox - 0.25 * ow) - x0, int(oy - 0.25 * oh) - y0
                    mx1, my1 = int(ox + 1.25 * ow) - x0, int(oy + 1.25 * oh) - y0
                    alpha[max(my0, 0):max(my1, 0), max(mx0, 0):max(mx1, 0)] = 0
            k_blur = max(3, int(0.15 * bw) | 1)  # soften the edges of those holes
            alpha = np.minimum(alpha, cv2.GaussianBlur(alpha, (k_blur, k_blur), 0))
            sources.append(FaceSource(np.ascontiguousarray(rgb[y0:y1, x0:x1]), alpha,
                                      (x - x0, y - y0, bw, bh), f"{path}#{k}"))
    return sources


def load_backgrounds(data: Path) -> list[np.ndarray]:
    root = data / "no_face"
    with open(root / "no_face.csv", newline="") as f:
        return [_read_rgb(root / r["path"]) for r in csv.DictReader(f)]


def _background(bg: np.ndarray, width: int, height: int) -> np.ndarray:
    """The photo enlarged to half the canvas's long side at most 4x (real texture, not a blur of
    a small photo), then mirrored outwards to fill the canvas."""
    h, w = bg.shape[:2]
    s = min(4.0, max(1.0, max(width, height) / 2 / max(h, w)))
    img = cv2.resize(bg, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC) if s > 1 else bg
    while img.shape[0] < height or img.shape[1] < width:
        ph, pw = max(0, height - img.shape[0]), max(0, width - img.shape[1])
        img = cv2.copyMakeBorder(img, min(ph, img.shape[0] - 1), 0, min(pw, img.shape[1] - 1), 0,
                                 cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(img[:height, :width])


def _paste(canvas: np.ndarray, src: FaceSource, size: float, cx: float, cy: float) -> np.ndarray:
    """Paste `src` scaled so its box is `size` wide, box centred at (cx, cy); the box x1y1x2y2."""
    bx, by, bw, bh = src.box
    f = size / bw
    ph, pw = src.patch.shape[:2]
    nw, nh = max(1, round(pw * f)), max(1, round(ph * f))
    fx, fy = nw / pw, nh / ph  # the exact factors after rounding: the box follows them
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    patch = cv2.resize(src.patch, (nw, nh), interpolation=interp).astype(np.float32)
    alpha = cv2.resize(src.alpha, (nw, nh), interpolation=cv2.INTER_LINEAR)[..., None]
    px, py = round(cx - (bx + bw / 2) * fx), round(cy - (by + bh / 2) * fy)
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(px, 0), max(py, 0), min(px + nw, W), min(py + nh, H)
    if x1 > x0 and y1 > y0:
        region = canvas[y0:y1, x0:x1].astype(np.float32)
        a = alpha[y0 - py:y1 - py, x0 - px:x1 - px]
        p = patch[y0 - py:y1 - py, x0 - px:x1 - px]
        canvas[y0:y1, x0:x1] = np.clip(region * (1 - a) + p * a + 0.5, 0, 255).astype(np.uint8)
    return np.array([px + bx * fx, py + by * fy, px + (bx + bw) * fx, py + (by + bh) * fy], np.float32)


def _eligible(sources: list[FaceSource], size: float) -> list[FaceSource]:
    ok = [s for s in sources if s.box[2] * MAX_UPSCALE >= size]
    return ok or sorted(sources, key=lambda s: -s.box[2])[:3]


def grid(sources, backgrounds, width: int, height: int, size: float, cols: int, rows: int,
         rng: np.random.Generator, name: str) -> GroupPhoto:
    """cols x rows faces of one size, evenly spread over the canvas."""
    canvas = _background(backgrounds[rng.integers(len(backgrounds))], width, height)
    pool = _eligible(sources, size)
    boxes = []
    for r in range(rows):
        for c in range(cols):
            cx, cy = (c + 0.5) * width / cols, (r + 0.5) * height / rows
            boxes.append(_paste(canvas, pool[rng.integers(len(pool))], size, cx, cy))
    return GroupPhoto(name, "grid", canvas, np.stack(boxes), np.full(len(boxes), size, np.float32))


def scattered(sources, backgrounds, width: int, height: int, sizes: list[float], count: int,
              rng: np.random.Generator, name: str) -> GroupPhoto:
    """Up to `count` faces of sizes drawn from `sizes` at random places, no two overlapping
    (faces keep a clear ring around them, as people in a crowd photo mostly do)."""
    canvas = _background(backgrounds[rng.integers(len(backgrounds))], width, height)
    taken: list[np.ndarray] = []
    boxes, sizes_used = [], []
    for _ in range(count):
        size = float(sizes[rng.integers(len(sizes))])
        pool = _eligible(sources, size)
        src = pool[rng.integers(len(pool))]
        h = size * src.box[3] / src.box[2]
        for _attempt in range(50):
            cx, cy = rng.uniform(size, width - size), rng.uniform(h, height - h)
            ring = np.array([cx - size, cy - h, cx + size, cy + h])
            if all(ring[2] <= t[0] or t[2] <= ring[0] or ring[3] <= t[1] or t[3] <= ring[1] for t in taken):
                taken.append(ring)
                boxes.append(_paste(canvas, src, size, cx, cy))
                sizes_used.append(size)
                break
    return GroupPhoto(name, "scattered", canvas, np.array(boxes, np.float32).reshape(-1, 4),
                      np.array(sizes_used, np.float32))


def empty(backgrounds, width: int, height: int, rng: np.random.Generator, name: str) -> GroupPhoto:
    """A large photo with no face: what the fine tiles make of plain background."""
    canvas = _background(backgrounds[rng.integers(len(backgrounds))], width, height)
    return GroupPhoto(name, "no_face", canvas, np.zeros((0, 4), np.float32), np.zeros(0, np.float32))


def evaluation_set(data: Path, seed: int = 20, light: bool = False) -> list[GroupPhoto]:
    """The small-faces evaluation case of `make eval`: grids of one size (the reproductions of
    issue 20 among them: 144 faces in 2400 px, 225 in 1920 px), scattered crowds of mixed sizes,
    720p to 40 MP, 1 to 300 faces, and large photos with no face. `light`: two 720p photos, for
    the test of the harness itself."""
    sources, backgrounds = load_sources(data), load_backgrounds(data)
    rng = np.random.default_rng(seed)
    mixed = [16, 20, 24, 28, 32, 40, 48, 64, 80, 96, 128, 160, 200]
    if light:
        return [grid(sources, backgrounds, 1280, 720, 24, 8, 4, rng, "grid_32x24px_720p"),
                scattered(sources, backgrounds, 1280, 720, mixed, 25, rng, "crowd_25_720p")]
    return [
        grid(sources, backgrounds, 2400, 2400, 120, 12, 12, rng, "grid_144x120px_2400"),
        grid(sources, backgrounds, 1920, 1920, 90, 15, 15, rng, "grid_225x90px_1920"),
        grid(sources, backgrounds, 1280, 720, 24, 16, 9, rng, "grid_144x24px_720p"),
        grid(sources, backgrounds, 1920, 1080, 32, 16, 9, rng, "grid_144x32px_1080p"),
        grid(sources, backgrounds, 4000, 3000, 48, 16, 12, rng, "grid_192x48px_12mp"),
        grid(sources, backgrounds, 4000, 3000, 20, 20, 15, rng, "grid_300x20px_12mp"),
        grid(sources, backgrounds, 4000, 3000, 16, 10, 8, rng, "grid_80x16px_12mp"),
        grid(sources, backgrounds, 1280, 720, 200, 5, 3, rng, "grid_15x200px_720p"),
        scattered(sources, backgrounds, 4000, 3000, mixed, 300, rng, "crowd_300_12mp"),
        scattered(sources, backgrounds, 7300, 5475, mixed, 120, rng, "crowd_120_40mp"),
        scattered(sources, backgrounds, 1920, 1080, mixed, 60, rng, "crowd_60_1080p"),
        scattered(sources, backgrounds, 1280, 720, mixed, 25, rng, "crowd_25_720p"),
        scattered(sources, backgrounds, 4000, 3000, [24], 1, rng, "single_24px_12mp"),
        scattered(sources, backgrounds, 7300, 5475, [16, 24, 32], 6, rng, "few_small_40mp"),
        empty(backgrounds, 4000, 3000, rng, "no_face_12mp"),
        empty(backgrounds, 7300, 5475, rng, "no_face_40mp"),
    ]


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:] or ["var/group_photos"])[0])
    out.mkdir(parents=True, exist_ok=True)
    from core.settings import SHARED_DATA

    photos = evaluation_set(SHARED_DATA)
    with open(out / "boxes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "x", "y", "width", "height"])
        for p in photos:
            (out / f"{p.name}.jpg").write_bytes(p.jpeg)
            for x1, y1, x2, y2 in p.boxes.tolist():
                w.writerow([f"{p.name}.jpg", round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)])
    print(f"{len(photos)} photos, {sum(len(p.boxes) for p in photos)} faces in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
