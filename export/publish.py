"""publish: MLflow ``@production`` models -> Triton model repository -> loaded by Triton.

Layout written (version directory = MLflow model version)::

    <repo>/face_detector/<v>/model.onnx (+ model.py on the cpu target), config.pbtxt
    <repo>/face_multitask/<v>/...
    <repo>/face_pipeline/1/model.py + pipeline/ (our pre/post-processing code)
    <repo>/registry.json   what is published, for humans and the API

Every directory is built under a temporary name in the same file system and renamed into
place, and config.pbtxt is replaced atomically, so a polling or loading Triton never sees a
half-written model. Old version directories stay until Triton reports the new ones ready.
"""

from __future__ import annotations

import compileall
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from export import triton_config as tc
from export.registry import Registry, VersionInfo, sha256_file
from pipeline import contract as C

PROJECT = Path(__file__).resolve().parent.parent
ONNX_RUNNER = PROJECT / "triton_models" / "onnx_runner" / "model.py"
PIPELINE_MODEL = PROJECT / "triton_models" / "face_pipeline" / "model.py"
PIPELINE_PACKAGE = PROJECT / "pipeline"
MODELS = (C.DETECTOR, C.MULTITASK)
CONFIGS = {C.DETECTOR: tc.detector_config, C.MULTITASK: tc.multitask_config}


@dataclass
class Published:
    name: str
    version: int
    changed: bool


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _version_dirs(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _write_model_version(registry: Registry, info: VersionInfo, model_dir: Path, target: str,
                         progress: Callable[[str], None]) -> bool:
    """Put model.onnx of this version in place; False when it is already there."""
    final = model_dir / str(info.version)
    onnx_path = final / "model.onnx"
    if onnx_path.exists() and (info.sha256 is None or sha256_file(onnx_path) == info.sha256):
        if target == "cpu":
            shutil.copy2(ONNX_RUNNER, final / "model.py")  # runner code may have changed
        return False
    progress(f"{info.name}: downloading models:/{info.name}/{info.version}")
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".tmp-") as tmp:
        staging = Path(tmp) / "version"
        staging.mkdir()
        src = registry.download(info.name, info.version, Path(tmp) / "download")
        shutil.move(str(src), staging / "model.onnx")
        if info.sha256 and sha256_file(staging / "model.onnx") != info.sha256:
            raise RuntimeError(f"{info.name} v{info.version}: downloaded file does not match its sha256 tag")
        if target == "cpu":
            shutil.copy2(ONNX_RUNNER, staging / "model.py")
        if final.exists():  # a damaged earlier attempt: swap it out
            shutil.rmtree(final)
        staging.rename(final)
    return True


def _write_pipeline(repo: Path, tuning: tc.Tuning, max_pixels: int) -> None:
    model_dir = repo / C.PIPELINE
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=".tmp-"))
    shutil.copy2(PIPELINE_MODEL, staging / "model.py")
    shutil.copytree(PIPELINE_PACKAGE, staging / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "inprocess.py"))
    final = model_dir / "1"
    if final.exists():
        old = model_dir / f".old-{time.time_ns()}"
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)
    _write_atomic(model_dir / "config.pbtxt", tc.to_pbtxt(tc.pipeline_config(tuning, max_pixels)))


def write_repository(registry: Registry, repo: Path, target: str = "cpu",
                     tuning: tc.Tuning = tc.Tuning(), max_pixels: int = 40_000_000,
                     progress: Callable[[str], None] = print,
                     versions: dict[str, int] | None = None) -> list[Published]:
    """Write @production (or the given `versions`, e.g. a candidate under evaluation)."""
    if target not in tc.TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {tc.TARGETS}")
    repo.mkdir(parents=True, exist_ok=True)
    published, record = [], {"target": target, "published_at": time.time(), "models": {}}
    for name in MODELS:
        info = registry.version(name, versions[name]) if versions and name in versions \
            else registry.production(name)
        if info is None:
            raise LookupError(f"{name} has no '{registry.alias}' alias in {registry.uri}; "
                              "run `python -m export bootstrap` first")
        model_dir = repo / name
        model_dir.mkdir(exist_ok=True)
        changed = _write_model_version(registry, info, model_dir, target, progress)
        cfg = CONFIGS[name](target, info.version, info.provenance(), tuning)
        _write_atomic(model_dir / "config.pbtxt", tc.to_pbtxt(cfg))
        progress(f"{name}: version {info.version} {'written' if changed else 'already in place'}")
        published.append(Published(name, info.version, changed))
        record["models"][name] = info.provenance()
    _write_pipeline(repo, tuning, max_pixels)
    # the python backend writes __pycache__ on first load, which a polling server sees as a
    # change and reloads; compiling up front avoids that double load
    compileall.compile_dir(str(repo), quiet=1)
    _write_atomic(repo / "registry.json", json.dumps(record, indent=2))
    return published


def load_into_triton(http_url: str, published: list[Published], repo: Path,
                     progress: Callable[[str], None] = print, timeout_s: float = 120.0) -> bool:
    """Ask a running Triton to (re)load; prune old version dirs once the new ones serve."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(http_url, connection_timeout=3, network_timeout=timeout_s)
    try:
        if not client.is_server_live():
            raise ConnectionError
    except Exception:
        progress(f"no Triton at {http_url}; the repository is written, it loads at the next start")
        return False
    try:
        for p in published:
            progress(f"loading {p.name} v{p.version} into Triton")
            client.load_model(p.name)
            if not client.is_model_ready(p.name, str(p.version)):
                raise RuntimeError(f"Triton did not make {p.name} v{p.version} ready")
        progress(f"loading {C.PIPELINE}")
        client.load_model(C.PIPELINE)
    except InferenceServerException as exc:
        raise RuntimeError(f"Triton refused the new models: {exc.message()}") from exc
    finally:
        client.close()
    for p in published:
        for v in _version_dirs(repo / p.name):
            if v != p.version:
                shutil.rmtree(repo / p.name / str(v), ignore_errors=True)
    return True
