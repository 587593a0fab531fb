"""The benchmark driver runs end to end on a few requests (no timing is asserted)."""

import json

import pytest

from loadtests import benchmark
from pipeline import contract as C

pytestmark = pytest.mark.triton


def test_benchmark_driver_measures_every_stage(triton, built_models, shared_data, tmp_path):
    photos = benchmark.bench_photos(shared_data)[:3]
    result = benchmark.run(1.0, tmp_path, triton.grpc_url, triton.metrics_url,
                           built_models[C.DETECTOR], built_models[C.MULTITASK], peers_dir=None,
                           photos=photos)
    for part in (result["inprocess"], result["triton"]["c1"], result["triton"]["c16"],
                 result["api"]["c1"], result["api"]["c16"]):
        assert part["images"] > 0 and part["images_per_s"] > 0
    assert result["triton"]["c16"]["errors"] == 0 and result["api"]["c16"]["errors"] == 0
    assert result["batching"][C.DETECTOR] >= 1
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert saved["ratios"] and "| API /analyze, concurrency 16 |" in (tmp_path / "benchmark.md").read_text()
