"""The locustfile runs headless for a few seconds against a real uvicorn + Triton, its requests
sent through face_analytics_client: every task type is exercised and none fails."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.integration.conftest import api_settings, served_api

pytestmark = pytest.mark.triton


def test_locustfile_through_the_client(triton_settings, tmp_path, shared_data):
    locust = Path(sys.executable).parent / "locust"
    with served_api(api_settings(triton_settings, tmp_path, "sqlite")) as url:
        run = subprocess.run([str(locust), "-f", "loadtests/locustfile.py", "--headless", "--users", "4",
                              "--spawn-rate", "4", "--run-time", "8s", "--host", url,
                              "--photos", str(shared_data / "verification"), "--csv", str(tmp_path / "l"),
                              "--only-summary", "--loglevel", "WARNING"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {r["Name"]: r for r in csv.DictReader((tmp_path / "l_stats.csv").open())}
    assert int(rows["/analyze"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0, (tmp_path / "l_failures.csv").read_text()
    assert {"/analyze", "/stats"} <= rows.keys()
