"""The docker compose stack as written: schema, services, images, and the environment each
service gets against what its code reads. The files are read through tests/deploy/compose.py
(interpolation and merge as Compose does them), never re-typed. tests/deploy/test_as_deployed.py
runs the same stack as processes."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.deploy import compose, settings_usage
from tests.deploy.compose import ROOT

STACKS = [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.cpu.yml")]
ENTRY = {"face-api": "api.__main__", "export": "export.__main__"}


def _has_compose() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="no docker compose client on this machine")
@pytest.mark.parametrize("files", STACKS)
def test_docker_compose_config_is_valid(files):
    args = [a for f in files for a in ("-f", f)]
    r = subprocess.run(["docker", "compose", *args, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _validator() -> Draft7Validator:
    schema = json.loads(compose.SCHEMA.read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_each_compose_file_matches_the_compose_spec_schema(name):
    data = compose._strip(compose._interpolate_tree(compose.raw(ROOT / name), {}))
    errors = sorted(_validator().iter_errors(data), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("files", STACKS)
def test_the_merged_stack_matches_the_compose_spec_schema(files):
    errors = sorted(_validator().iter_errors(compose.load(files)), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_catches_a_misspelt_key():
    bad = compose.load()
    bad["services"]["face-api"]["enviroment"] = {"A": "1"}
    assert any("enviroment" in e.message for e in _validator().iter_errors(bad))


def test_services_their_order_and_health():
    s = compose.load()["services"]
    assert {"mysql", "mlflow", "export", "triton", "face-api", "prometheus", "locust"} <= set(s)
    assert s["mysql"]["image"].startswith("mysql:8") and s["mysql"]["healthcheck"]
    assert s["export"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    triton = s["triton"]
    assert "--model-control-mode=explicit" in triton["command"]
    assert triton["depends_on"]["export"]["condition"] == "service_completed_successfully"
    gpu = triton["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == "all"
    api = s["face-api"]
    assert api["depends_on"]["mysql"]["condition"] == "service_healthy"
    assert api["depends_on"]["triton"]["condition"] == "service_healthy"
    assert api["healthcheck"]["test"] and s["locust"]["profiles"] == ["loadtest"]
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"triton:8002", "face-api:8000"}


def test_cpu_override_swaps_triton_and_the_publish_target():
    s = compose.load(STACKS[1])["services"]
    assert "deploy" not in s["triton"]
    assert s["triton"]["build"]["dockerfile"] == "docker/triton-cpu.Dockerfile"
    assert s["triton"]["volumes"] == ["model-repository:/models:ro"]
    assert compose.environment(s["export"])["TRITON_TARGET"] == "cpu"
    assert compose.environment(compose.load()["services"]["export"])["TRITON_TARGET"] == "gpu"


def test_mlflow_accepts_the_host_header_the_stack_sends_and_installs_nothing_at_start():
    s = compose.load()["services"]["mlflow"]
    argv = compose.service_argv(s, compose.service_image(s))
    assert argv[:2] == ["mlflow", "server"] and "pip" not in " ".join(argv)
    allowed = next(a.split("=", 1)[1] for a in argv if a.startswith("--allowed-hosts="))
    mlflow_url = compose.environment(compose.load()["services"]["export"])["MLFLOW_TRACKING_URI"]
    assert mlflow_url.removeprefix("http://") in allowed.split(",")
    dockerfile = (ROOT / s["build"]["dockerfile"]).read_text()
    assert "pymysql" in dockerfile
    # MLflow's S3 artifact repository imports boto3, which mlflow does not depend on
    assert "boto3" in dockerfile


def test_face_api_publishes_a_port_range_so_it_can_scale():
    s = compose.load()["services"]["face-api"]
    (port,) = s["ports"]
    host, container = port.rsplit(":", 1)
    assert container == "8000" and re.fullmatch(r"\d+-\d+", host), port
    low, high = map(int, host.split("-"))
    assert high > low


def test_locust_sends_an_api_key_only_when_one_is_set():
    s = compose.load()["services"]["locust"]
    assert "--api-key" not in s["command"]
    assert compose.environment(s)["LOCUST_API_KEY"] == ""
    assert 'env_var="LOCUST_API_KEY"' in (ROOT / "loadtests" / "locustfile.py").read_text()


def test_non_root_images_own_the_mount_points_of_their_volumes():
    """Docker fills an empty named volume from the image's directory, ownership included; a
    directory the image lacks becomes a root-owned volume that uid 10001 cannot write."""
    s = compose.load()["services"]
    for name in ("export", "face-api"):
        image = compose.service_image(s[name])
        assert image.user == "app"
        created = " ".join(r for r in image.runs if r.startswith("useradd"))
        targets = [compose._volume_target(v) for v in s[name].get("volumes", [])]
        targets += [v for k, v in compose.environment(s[name]).items() if k == "FA_DATA_DIR"]
        for target in targets:
            assert re.search(rf"install -d -o app -g app\b.*\s{re.escape(target)}(\s|$)", created), (name, target)


def test_one_pillow_numpy_and_opencv_everywhere():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(d.split("==") for d in deps if "==" in d)
    for dockerfile in ("triton-cpu.Dockerfile", "triton-gpu.Dockerfile"):
        text = (ROOT / "docker" / dockerfile).read_text()
        for package in ("pillow", "numpy", "opencv-python-headless"):
            found = re.findall(rf"\b{package}==([\w.]+)", text)
            assert found == [pins[package]], (dockerfile, package, found)


def test_mysql_init_grants_mlflow_to_the_configured_user():
    mysql = compose.load()["services"]["mysql"]
    (init,) = [v for v in mysql["volumes"] if "docker-entrypoint-initdb.d" in v]
    source, target = init.split(":")[:2]
    assert target.endswith(".sh")
    text = (ROOT / source).read_text()
    assert "'$MYSQL_USER'@'%'" in text and "'face'" not in text


# --- environment against code -----------------------------------------------------------------

# documented variables of the third-party images (hub.docker.com/_/mysql "Environment Variables")
MYSQL_IMAGE_ENV = {"MYSQL_ROOT_PASSWORD", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE"}


@pytest.mark.parametrize("files", STACKS)
@pytest.mark.parametrize("service", sorted(ENTRY))
def test_every_variable_compose_sets_is_read_by_the_service(files, service):
    svc = compose.load(files)["services"][service]
    argv = compose.service_argv(svc, compose.service_image(svc))
    modules = set(re.findall(r"python -m ([\w.]+)", " ".join(argv)))
    assert modules and {m.split(".")[0] for m in modules} == {ENTRY[service].split(".")[0]}
    read = settings_usage.reads(settings_usage.closure(ENTRY[service]).values())
    names = settings_usage.env_names()
    for var in compose.environment(svc):
        assert var in names, f"{service}: {var} is not a setting"
        assert names[var] in read, f"{service}: {var} is set but its code never reads it"


@pytest.mark.parametrize("service", sorted(ENTRY))
def test_every_setting_the_service_reads_is_set_or_has_a_portable_default(service):
    env = compose.environment(compose.load()["services"][service])
    by_field = {v: k for k, v in settings_usage.env_names().items()}
    documented = (ROOT / "docs" / "configuration.md").read_text()
    for group, name in settings_usage.reads(settings_usage.closure(ENTRY[service]).values()):
        var = by_field[(group, name)]
        if var in env:
            continue
        assert f"`{var}`" in documented, f"{service}: {var} has no documented default"
        assert not settings_usage.local_default(group, name), \
            f"{service}: {var} defaults to a developer-machine value; compose must set it"


def test_the_usage_scan_sees_an_unread_variable():
    """FA_HOST was ignored while the image hard-coded --host: a command that does not read
    the settings must show up as not reading them."""
    read = settings_usage.reads([ROOT / "api" / "main.py"])
    assert ("server", "host") not in read and ("auth", "enabled") not in read
    assert ("auth", "protect_metrics") in settings_usage.reads([ROOT / "api" / "auth.py"])
    assert ("server", "host") in settings_usage.reads([ROOT / "api" / "__main__.py"])


def test_third_party_services_get_only_their_documented_variables():
    s = compose.load()["services"]
    assert set(compose.environment(s["mysql"])) <= MYSQL_IMAGE_ENV
    init = (ROOT / "deploy" / "mysql-init.sh").read_text()
    assert set(re.findall(r"\$\{?(MYSQL_\w+)", init)) <= set(compose.environment(s["mysql"]))
    for name in ("mlflow", "triton", "prometheus"):
        assert not compose.environment(s[name]), name


def test_the_api_image_starts_the_server_from_its_settings():
    image = compose.service_image(compose.load()["services"]["face-api"])
    assert image.cmd == ["python", "-m", "api"]
    text = (ROOT / "api" / "__main__.py").read_text()
    for field in ("host", "port", "workers", "log_level"):
        assert f"server.{field}" in text


def test_api_image_is_multi_stage_non_root_without_build_tools():
    text = (ROOT / "docker" / "app.Dockerfile").read_text()
    stages = text.split("\nFROM ")
    final = [st for st in stages if st.startswith("runtime AS api")][0]
    runtime = [st for st in stages if " AS runtime" in st][0]
    assert "USER app" in final
    assert "build-essential" not in runtime and "build-essential" not in final


def test_the_export_image_fetches_its_model_sources_at_build_time():
    image = compose.service_image(compose.load()["services"]["export"])
    assert "python -m export fetch" in image.runs and image.env["FA_SOURCE_CACHE"]


def test_promotion_command_in_the_docs_is_a_compose_run_of_the_export_service():
    words = shlex.split(compose.promotion_command())
    assert words[:5] == ["docker", "compose", "run", "--rm", "export"]
    assert "promote" in words[-1] and "publish" in words[-1]


def test_configuration_table_is_current():
    from tools.settings_table import markdown

    assert (ROOT / "docs" / "configuration.md").read_text() == markdown()


def test_the_published_pipeline_is_readable_by_another_uid(tmp_path):
    """The export job (uid 10001) writes the repository that Triton reads as another uid;
    mkdtemp's 0700 once made face_pipeline/1 unreadable for it."""
    import os
    import stat

    from export import publish, triton_config
    from pipeline.limits import DecodeLimits

    old = os.umask(0o077)  # even under a strict umask
    try:
        publish._write_pipeline(tmp_path, triton_config.Tuning(), DecodeLimits(max_pixels=1000))
    finally:
        os.umask(old)
    version = tmp_path / "face_pipeline" / "1"
    assert stat.S_IMODE(version.stat().st_mode) == 0o755
    for path in [tmp_path / "face_pipeline" / "config.pbtxt", *version.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o004, path  # others may read
        if path.is_dir():
            assert mode & 0o001, path

