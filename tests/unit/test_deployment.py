"""The docker compose stack as written: services, ordering, health checks, GPU and CPU targets.

`docker compose config -q` runs where a docker client with the compose plugin exists; the
structure is checked everywhere by reading the YAML."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!reset", lambda loader, node: None)  # compose's merge tag


def compose(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=_Loader)


def _has_compose() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="no docker compose client on this machine")
@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.cpu.yml"]])
def test_docker_compose_config_is_valid(files):
    args = [a for f in files for a in ("-f", f)]
    r = subprocess.run(["docker", "compose", *args, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_services_their_order_and_health():
    s = compose("docker-compose.yml")["services"]
    assert {"mysql", "mlflow", "export", "triton", "face-api", "prometheus", "locust"} <= set(s)
    assert s["mysql"]["image"].startswith("mysql:8") and s["mysql"]["healthcheck"] and s["mysql"]["volumes"]
    assert "--serve-artifacts" in s["mlflow"]["command"] and "mysql" in s["mlflow"]["command"]
    assert s["export"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "publish" in s["export"]["command"][0] and "bootstrap" in s["export"]["command"][0]
    triton = s["triton"]
    assert "--model-control-mode=explicit" in triton["command"]
    assert triton["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    gpu = triton["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    api = s["face-api"]
    assert api["depends_on"]["mysql"]["condition"] == "service_healthy"
    assert api["depends_on"]["triton"]["condition"] == "service_healthy"
    env = api["environment"]
    for key in ("MLFLOW_TRACKING_URI", "MYSQL_HOST", "MYSQL_PORT", "MYSQL_USER", "MYSQL_PASSWORD",
                "MYSQL_DATABASE", "FA_WORKERS", "PROMETHEUS_MULTIPROC_DIR"):
        assert key in env, key
    assert env["FA_AUTH_ENABLED"] == "true"
    assert s["locust"]["profiles"] == ["loadtest"]
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"triton:8002", "face-api:8000"}


def test_cpu_override_drops_the_gpu_and_publishes_for_cpu():
    s = compose("docker-compose.cpu.yml")["services"]
    assert s["triton"]["deploy"] is None  # !reset
    assert s["triton"]["build"]["dockerfile"] == "docker/triton-cpu.Dockerfile"
    assert s["export"]["environment"]["TRITON_TARGET"] == "cpu"


def test_api_image_is_multi_stage_non_root_without_build_tools():
    text = (ROOT / "docker" / "app.Dockerfile").read_text()
    stages = text.split("\nFROM ")
    assert len(stages) >= 3
    final = [st for st in stages if st.startswith("runtime AS api")][0]
    runtime = [st for st in stages if " AS runtime" in st][0]
    assert "USER app" in final
    assert "build-essential" not in runtime and "build-essential" not in final


def test_configuration_table_is_current():
    from tools.settings_table import markdown

    assert (ROOT / "docs" / "configuration.md").read_text() == markdown()
