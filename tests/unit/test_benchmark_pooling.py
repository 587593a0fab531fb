"""Rounds of one benchmark measurement pool into one figure weighted by time, not by rate."""

from loadtests.benchmark import pooled, summarise


def test_rounds_pool_by_time_and_keep_each_rate():
    fast = summarise([0.1] * 20, 2.0, faces=40) | {"concurrency": 16, "errors": 0,
                                                   "_counts": {"m": (40, 10)}}
    slow = summarise([0.4] * 5, 2.5, faces=5) | {"concurrency": 16, "errors": 1,
                                                 "_counts": {"m": (10, 5)}}
    out = pooled([fast, slow])
    assert out["images"] == 25 and out["images_per_s"] == round(25 / 4.5, 2)  # not the mean of 10 and 2
    assert out["faces_per_s"] == round(45 / 4.5, 2)
    assert out["rounds"] == [10.0, 2.0] and out["errors"] == 1 and out["concurrency"] == 16
    assert out["batching"] == {"m": round(50 / 15, 2)}
    assert "_lat" not in out and out["p99_ms"] == 400.0


def test_peer_rounds_pool_and_a_failed_round_is_reported():
    a = {"processed": 30, "elapsed_s": 3.0, "images_per_s": 10.0, "faces_per_s": 20.0, "p50_ms": 90, "p99_ms": 200}
    b = {"processed": 10, "elapsed_s": 2.0, "images_per_s": 5.0, "faces_per_s": 5.0, "p50_ms": 190, "p99_ms": 400}
    out = pooled([a, b])
    assert out["images_per_s"] == 8.0 and out["faces_per_s"] == 14.0 and out["p99_ms"] == 400
    assert out["rounds"] == [10.0, 5.0]
    assert pooled([a, {"error": "boom"}]) == {"error": "boom"}
    assert pooled([None, None]) is None
