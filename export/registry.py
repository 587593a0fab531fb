"""The MLflow model registry: the only module of export/ that talks to MLflow.

``MLFLOW_TRACKING_URI`` picks the registry; unset, an embedded one is used (sqlite database
and a local artifact directory under FA_DATA_DIR/mlflow), so a fresh machine needs no server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings

EXPERIMENT = "face-analytics-models"
SHA_TAG = "sha256"

for _noisy in ("mlflow", "alembic", "urllib3"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", module="mlflow")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    run_id: str | None
    sha256: str | None
    aliases: tuple[str, ...]

    def provenance(self) -> dict[str, str]:
        """What the model repository records so the API can report which model serves."""
        return {"mlflow_name": self.name, "mlflow_version": str(self.version),
                "mlflow_run_id": self.run_id or "", "sha256": self.sha256 or ""}


class Registry:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.uri = settings.mlflow_tracking_uri
        self.alias = settings.mlflow.production_alias
        self.embedded = settings.mlflow.tracking_uri is None
        if self.embedded:
            (settings.paths.data_dir / "mlflow").mkdir(parents=True, exist_ok=True)
        # MLflow 3 reads these from the environment only; keep its own telemetry quiet here
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        self._activate()
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _activate(self) -> None:
        # MLflow's fluent API (start_run, log_model, models:/ downloads) uses process-wide URIs:
        # set them before each use, or the last Registry constructed in this process wins
        self.mlflow.set_tracking_uri(self.uri)
        self.mlflow.set_registry_uri(self.uri)

    # -- experiments and logging -------------------------------------------------------
    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.embedded:
            location = self.settings.mlflow_artifact_root.as_uri()
        return self.client.create_experiment(EXPERIMENT, artifact_location=location)

    def log_onnx(self, name: str, path: Path, params: dict[str, str]) -> VersionInfo:
        import onnx

        sha = sha256_file(path)
        self._activate()
        with self.mlflow.start_run(experiment_id=self.experiment_id(), run_name=f"bootstrap-{name}") as run:
            self.mlflow.log_params(params)
            self.mlflow.set_tag(SHA_TAG, sha)
            info = self.mlflow.onnx.log_model(
                onnx.load(str(path)), name="model", registered_model_name=name,
                # one self-contained model.onnx; the default splits weights into a .data file
                save_as_external_data=False,
            )
        version = int(info.registered_model_version)
        self.client.set_model_version_tag(name, str(version), SHA_TAG, sha)
        return self.version(name, version, run_id=run.info.run_id)

    # -- queries ---------------------------------------------------------------------------
    def version(self, name: str, version: int, run_id: str | None = None) -> VersionInfo:
        mv = self.client.get_model_version(name, str(version))
        return VersionInfo(name, int(mv.version), run_id or mv.run_id, mv.tags.get(SHA_TAG),
                           tuple(getattr(mv, "aliases", ()) or ()))

    def versions(self, name: str) -> list[VersionInfo]:
        rows = self.client.search_model_versions(f"name='{name}'")
        if not rows:
            return []
        # search results carry no aliases; the registered model has them
        aliases: dict[str, list[str]] = {}
        for alias, version in (self.client.get_registered_model(name).aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        return sorted((VersionInfo(name, int(mv.version), mv.run_id, mv.tags.get(SHA_TAG),
                                   tuple(aliases.get(str(mv.version), ()))) for mv in rows),
                      key=lambda v: v.version)

    def find_by_sha(self, name: str, sha: str) -> VersionInfo | None:
        return next((v for v in self.versions(name) if v.sha256 == sha), None)

    def production(self, name: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(name, self.alias)
        except MlflowException:
            return None
        return self.version(name, int(mv.version))

    def registered_names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    # -- changes ---------------------------------------------------------------------------
    def set_production(self, name: str, version: int) -> None:
        self.version(name, version)  # raises a clear MlflowException if it does not exist
        self.client.set_registered_model_alias(name, self.alias, str(version))

    def download(self, name: str, version: int, dst: Path) -> Path:
        """Download the version's artifacts and return the path of its model.onnx."""
        dst.mkdir(parents=True, exist_ok=True)
        self._activate()
        local = self.mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(dst))
        onnx_path = Path(local) / "model.onnx"
        if not onnx_path.exists():
            raise FileNotFoundError(f"models:/{name}/{version} has no model.onnx")
        return onnx_path

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value))

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)
