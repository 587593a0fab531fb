"""The benchmark driver runs end to end on a tiny set and prints its ratios (no timing is asserted)."""

import json

import pytest

from loadtests import benchmark, photo_sets
from pipeline import contract as C

pytestmark = pytest.mark.triton


def test_benchmark_driver_measures_every_stage_per_size_class(triton, built_models, shared_data, tmp_path, capsys):
    result = benchmark.run(1.0, tmp_path / "out", triton.grpc_url, triton.metrics_url,
                           built_models[C.DETECTOR], built_models[C.MULTITASK], peers_dir=None,
                           classes=["original", "720p"], data=shared_data, limit=2, work=tmp_path,
                           rounds=2)
    assert list(result["classes"]) == ["original", "720p"]
    for name, r in result["classes"].items():
        for part in (r["inprocess"], *r["triton"].values(), *r["api"].values()):
            assert part["images"] > 0 and part["images_per_s"] > 0, name
        assert set(r["triton"]) == {"c1", "c16", "c32"} and set(r["api"]) == {"c1", "c16"}
        assert r["triton"]["c32"]["errors"] == 0 and r["api"]["c16"]["errors"] == 0
        assert r["triton"]["c32"]["batching"][C.DETECTOR] >= 1
        assert len(r["load_before"]) == 3
        assert r["ratios"]["API c16 / in-process floor"] > 0
        assert r["ratios"]["API c16 / best OpenCV"] is None  # no peers here
        # two interleaved rounds, pooled: each figure keeps its rounds' rates
        assert len(r["inprocess"]["rounds"]) == 2 and len(r["api"]["c16"]["rounds"]) == 2
        assert len(r["ratios_by_round"]["API c16 / Triton c16"]) == 2
        assert r["api_one_pass"]["c16"]["images"] > 0 and r["api_one_pass"]["c16"]["errors"] == 0
    # the 720p class was built: JPEG, the pixel count of 1280x720 within rounding
    scaled = result["classes"]["720p"]["set"]
    assert scaled["photos"] == 2 and abs(scaled["median_mp"] - 0.92) < 0.01
    assert all(p.suffix == ".jpg" for p in (tmp_path / "photos" / "720p").iterdir())
    saved = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert saved["classes"]["720p"]["ratios"]
    report = (tmp_path / "out" / "benchmark.md").read_text()
    assert "## 720p" in report and "| API /analyze, concurrency 16 |" in report
    assert "API c16 / in-process floor" in capsys.readouterr().out


def test_size_classes_keep_the_aspect_ratio_and_set_the_pixel_count(shared_data, tmp_path):
    sets = photo_sets.build(shared_data, tmp_path, ["1080p"], limit=3)
    from PIL import Image

    for path, src in zip(sets["1080p"], photo_sets.scalable_photos(shared_data)):
        with Image.open(path) as im, Image.open(src) as orig:
            w, h = im.size
            assert abs(w * h - 1920 * 1080) / (1920 * 1080) < 0.01
            assert abs(w / h - orig.size[0] / orig.size[1]) < 0.01


def test_profile_reads_tritons_per_model_statistics(triton, built_models, shared_data, tmp_path):
    import asyncio

    from loadtests import profile

    photo = shared_data / "age_gender" / "images" / "biden.jpg"
    before = profile.triton_stats(triton.http_url)
    asyncio.run(benchmark.run_triton(triton.grpc_url, [photo.read_bytes()], (2,), 1.0))
    delta = profile.stats_delta(before, profile.triton_stats(triton.http_url))
    assert delta[C.PIPELINE]["executions"] > 0 and delta[C.MULTITASK]["executions"] > 0
    assert delta[C.DETECTOR]["compute_infer_ms_per_request"] > 0
    ops = profile.ort_profile(built_models[C.DETECTOR], built_models[C.MULTITASK], [photo], tmp_path)
    assert any(k.startswith("detector:Conv") for k in ops) and any(k.startswith("multitask:") for k in ops)


def test_api_cost_measures_cpu_per_image_for_every_upload(triton, shared_data, tmp_path):
    """loadtests.api_cost: each way of sending the photo answers without errors through a real
    uvicorn, and the CPU accounting sees the API process and Triton's whole process tree."""
    import asyncio

    from loadtests import api_cost
    from tools.api_process import start_api, stop

    photo = (shared_data / "detection" / "images" / "friends_t1.jpg").read_bytes()
    triton_pids = api_cost.tree(triton.process.pid)
    assert len(triton_pids) > 1  # tritonserver and its python backend stubs
    proc, url = start_api(triton.grpc_url, tmp_path / "api", TRITON_TIMEOUT_S="60")
    try:
        runs = [asyncio.run(api_cost.measure_api(url, upload, [photo], 2, 1.0,
                                                 {"api": [proc.pid], "triton": triton_pids}))
                for upload in api_cost.UPLOADS]
    finally:
        stop(proc)
    for upload, r in zip(api_cost.UPLOADS, runs):
        assert r["errors"] == 0 and r["images"] > 0, (upload, r)
        assert r["triton_cpu_ms_per_image"] > 0, (upload, r)
    # the kernel counts CPU in 10 ms ticks: over the three short runs together the API shows
    assert sum(r["api_cpu_ms_per_image"] for r in runs) > 0
