"""The compose stack as deployed: docker-compose.yml + docker-compose.cpu.yml, parsed (not
re-typed), every service run with its own command, environment and user on a private
network where the service names resolve (tests/deploy/stack.py says what stands in for
docker). Through it: /health, /analyze, /register, the documented promotion command, and
/health reporting the promoted version."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys

import pytest

from tests.deploy.compose import ROOT

# ~4 minutes on the 2-core machine: `make test-deploy` runs it (CI: .ci/run), `make test` not
pytestmark = [
    pytest.mark.deployed,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mariadbd"),
                       reason="needs root (namespaces), unshare and MariaDB's mariadbd"),
]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, shared_data):
    work = tmp_path_factory.mktemp("compose")
    key = secrets.token_urlsafe(24)
    # what an operator puts in .env (names and secrets of their own, so a hard-coded default
    # anywhere shows); everything else keeps the defaults of docker-compose.yml
    env = {"FA_AUTH_KEY_HASHES": hashlib.sha256(key.encode()).hexdigest(),
           "MYSQL_USER": "fa_operator", "MYSQL_PASSWORD": secrets.token_hex(8),
           "MYSQL_ROOT_PASSWORD": secrets.token_hex(8), "MYSQL_DATABASE": "faces_prod"}
    cmd = ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--kill-child",
           sys.executable, "-m", "tests.deploy.stack", "--work", str(work), "--env", json.dumps(env),
           "--files", "docker-compose.yml", "docker-compose.cpu.yml",
           "--scenario", "tests.deploy.scenario:deployed"]
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "FA_TEST_API_KEY": key},
                       capture_output=True, text=True, timeout=900)
    logs = {p.name: p.read_text(errors="replace")[-3000:] for p in work.glob("*.log")}
    assert r.returncode == 0, f"{r.stderr[-6000:]}\n" + "\n".join(f"--- {k}\n{v}" for k, v in logs.items())
    return json.loads((work / "result.json").read_text())


def test_the_stack_comes_up_in_compose_order(deployed):
    up = deployed["up"]
    assert list(up)[:5] == ["mysql", "mlflow", "export", "triton", "face-api"]
    health = deployed["health"]
    assert health["status"] == 200 and health["body"]["status"] == "healthy", health
    models = health["body"]["models"]
    assert models["face_detector"]["mlflow_version"] == "1" and models["face_multitask"]["mlflow_version"] == "1"


def test_api_keys_are_on_as_deployed(deployed):
    assert deployed["analyze_without_key"]["status"] == 401


def test_analyze_and_register_through_the_stack(deployed):
    analyze = deployed["analyze"]
    assert analyze["status"] == 200 and len(analyze["body"]["faces"]) == 1, analyze
    register = deployed["register"]
    assert register["status"] == 200 and register["body"]["person_id"].startswith("known_"), register
    face = deployed["recognised"]["body"]["faces"][0]
    assert face["identity"] == "known" and face["person_name"] == "Deployed Woman"


def test_the_documented_promotion_serves_the_new_version(deployed):
    assert "promote face_multitask 2" in deployed["promotion_command"]
    health = deployed["health_after"]
    assert health["status"] == 200, health
    assert health["body"]["models"]["face_multitask"]["mlflow_version"] == "2"
    assert health["body"]["models"]["face_detector"]["mlflow_version"] == "1"
    face = deployed["recognised_after"]["body"]["faces"][0]
    assert face["identity"] == "known" and face["person_name"] == "Deployed Woman"
