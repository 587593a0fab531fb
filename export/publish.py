"""publish: MLflow ``@production`` models -> Triton model repository -> loaded by Triton.

Layout written (version directory = MLflow model version)::

    <repo>/face_detector/<v>/model.onnx (+ model.py on the cpu target), config.pbtxt
    <repo>/face_multitask/<v>/...
    <repo>/face_pipeline/1/model.py + pipeline/ (our pre/post-processing code)
    <repo>/registry.json   what is published, for humans and the API

Every directory is built under a temporary name in the same file system and renamed into
place, and config.pbtxt is replaced atomically, so a polling or loading Triton never sees a
half-written model. Old version directories stay until every Triton replica reports the new
ones ready (several replicas share one repository in a cluster: deploy/k8s, docs/kubernetes.md).
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

from core.settings import UploadSettings
from export import triton_config as tc
from export.registry import Registry, VersionInfo, sha256_file
from pipeline import contract as C
from pipeline.limits import DecodeLimits

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
    kept: tuple[int, ...] = ()  # older versions still served beside it


def current_version(repo: Path, name: str) -> tuple[int, ...]:
    """The version the model's config.pbtxt in `repo` names first (the one published last),
    what --keep-previous keeps: at most two versions are ever served side by side."""
    path = repo / name / "config.pbtxt"
    if not path.exists():
        return ()
    return tuple(tc.parse_pbtxt(path.read_text()).version_policy.specific.versions[:1])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)  # Triton may run as another uid than the export job
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
        staging.chmod(0o755)  # readable by a Triton running as another uid, whatever the umask
        src = registry.download(info.name, info.version, Path(tmp) / "download")
        shutil.move(str(src), staging / "model.onnx")
        (staging / "model.onnx").chmod(0o644)
        if info.sha256 and sha256_file(staging / "model.onnx") != info.sha256:
            raise RuntimeError(f"{info.name} v{info.version}: downloaded file does not match its sha256 tag")
        if target == "cpu":
            shutil.copy2(ONNX_RUNNER, staging / "model.py")
        if final.exists():  # a damaged earlier attempt: swap it out
            shutil.rmtree(final)
        staging.rename(final)
    return True


def _write_pipeline(repo: Path, tuning: tc.Tuning, decode: DecodeLimits, multitask_version: int = 0) -> None:
    model_dir = repo / C.PIPELINE
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=".tmp-"))
    staging.chmod(0o755)  # mkdtemp makes it 0700: a Triton running as another uid could not read it
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
    _write_atomic(model_dir / "config.pbtxt",
                  tc.to_pbtxt(tc.pipeline_config(tuning, decode, multitask_version)))


def write_repository(registry: Registry, repo: Path, target: str = "cpu",
                     tuning: tc.Tuning = tc.Tuning(), decode: DecodeLimits | None = None,
                     progress: Callable[[str], None] = print,
                     versions: dict[str, int] | None = None,
                     keep_serving: dict[str, tuple[int, ...]] | None = None) -> list[Published]:
    """Write @production (or the given `versions`, e.g. a candidate under evaluation). `decode`:
    the caps face_pipeline decodes under, by default the API's own (FA_UPLOAD_* settings).
    `keep_serving` names versions to keep loaded beside the new one (`publish --keep-previous`:
    the gallery's face_multitask version until reembed has run)."""
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
        int8 = target == "gpu" and tc.has_qdq(model_dir / str(info.version) / "model.onnx")
        also = tuple(v for v in (keep_serving or {}).get(name, ()) if (model_dir / str(v)).is_dir())
        cfg = CONFIGS[name](target, info.version, info.provenance(), tuning, int8=int8, also_serve=also)
        _write_atomic(model_dir / "config.pbtxt", tc.to_pbtxt(cfg))
        progress(f"{name}: version {info.version} {'written' if changed else 'already in place'}")
        published.append(Published(name, info.version, changed, also))
        record["models"][name] = info.provenance()
    _write_pipeline(repo, tuning, decode or UploadSettings().decode_limits(),
                    next(p.version for p in published if p.name == C.MULTITASK))
    # the python backend writes __pycache__ on first load, which a polling server sees as a
    # change and reloads; compiling up front avoids that double load
    compileall.compile_dir(str(repo), quiet=1)
    _write_atomic(repo / "registry.json", json.dumps(record, indent=2))
    return published


def _load_replica(client, address: str, published: list[Published], headers: dict | None,
                  progress: Callable[[str], None]) -> None:
    from tritonclient.utils import InferenceServerException

    try:
        for p in published:
            progress(f"{address}: loading {p.name} v{p.version}")
            client.load_model(p.name, headers=headers)
            if not client.is_model_ready(p.name, str(p.version)):
                raise RuntimeError(f"Triton at {address} did not make {p.name} v{p.version} ready")
        progress(f"{address}: loading {C.PIPELINE}")
        client.load_model(C.PIPELINE, headers=headers)
    except InferenceServerException as exc:
        raise RuntimeError(f"Triton at {address} refused the new models: {exc.message()}") from exc


def _serves_exactly(client, published: list[Published], repo: Path) -> bool:
    """Every published version ready, and no other version of those models still served."""
    for p in published:
        if not client.is_model_ready(p.name, str(p.version)):
            return False
        if any(client.is_model_ready(p.name, str(v)) for v in _version_dirs(repo / p.name)
               if v != p.version and v not in p.kept):
            return False
        if not all(client.is_model_ready(p.name, str(v)) for v in p.kept):
            return False
    return client.is_model_ready(C.PIPELINE)


def load_into_triton(http_url: str, published: list[Published], repo: Path,
                     progress: Callable[[str], None] = print, timeout_s: float = 120.0,
                     headers: dict[str, str] | None = None, prune: bool = True) -> bool:
    """Load the published versions into every Triton replica `http_url` names (one address,
    ``dns:///service:port`` or a list, see api.triton_targets); old version directories are
    deleted only once every replica reports the new versions ready and the old ones gone.

    Replicas are listed again after each round, so a pod that appeared meanwhile (and may
    have started from the repository as it was) is loaded too. A replica that does not
    answer fails the publish and leaves the old versions on disk; `prune=False` keeps them
    anyway (a rollout to some replicas only)."""
    import socket

    import tritonclient.http as httpclient

    from api.triton_targets import replica_addresses

    def clients(addresses):
        return {a: httpclient.InferenceServerClient(a, connection_timeout=3, network_timeout=timeout_s)
                for a in addresses}

    try:
        first = replica_addresses(http_url)
    except (socket.gaierror, ValueError):
        first = []
    live = [a for a in first if _is_live(a)]
    if not live:
        progress(f"no Triton at {http_url}; the repository is written, it loads at the next start")
        return False
    done: set[str] = set()
    for _round in range(10):
        pending = [a for a in replica_addresses(http_url) if a not in done]
        if not pending:
            break
        for address, client in clients(pending).items():
            try:
                if not _is_live(address):
                    raise RuntimeError(f"Triton at {address} does not answer; old versions kept")
                _load_replica(client, address, published, headers, progress)
            finally:
                client.close()
            done.add(address)
    else:
        raise RuntimeError(f"the replicas behind {http_url} kept changing; old versions kept")
    final = replica_addresses(http_url)
    for address, client in clients(final).items():
        try:
            if not _serves_exactly(client, published, repo):
                raise RuntimeError(f"Triton at {address} does not serve exactly the published "
                                   "versions; old versions kept")
        finally:
            client.close()
    progress(f"{len(final)} replica(s) serve " + ", ".join(f"{p.name} v{p.version}" for p in published))
    for p in published if prune else ():
        for v in _version_dirs(repo / p.name):
            if v != p.version and v not in p.kept:
                shutil.rmtree(repo / p.name / str(v), ignore_errors=True)
    return True


def _is_live(address: str) -> bool:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(address, connection_timeout=3, network_timeout=5)
    try:
        return client.is_server_live()
    except Exception:  # noqa: BLE001 - refused, reset, timeout: all mean "not there"
        return False
    finally:
        client.close()
