"""Pure rules of the API without a server: person names and ids, the token bucket, the gender rule."""

from __future__ import annotations

import numpy as np
import pytest

from api import auth
from api.errors import InvalidField
from api.identity import clean_name, slugify


@pytest.mark.parametrize("name,slug", [
    ("John Doe", "john_doe"),
    ("  Zoë Ñandú  ", "zoe_nandu"),
    ("Robert'); DROP TABLE known_faces;--", "robert_drop_table_known_faces"),
    ("李小龍", "person"),  # nothing ASCII left
    ("x" * 80, "x" * 60),
])
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_clean_name_trims_and_normalises():
    assert clean_name("  Ann  ") == "Ann"
    assert clean_name("Zoe\u0301") == "Zoé"  # NFC: one code point
    assert clean_name("x" * 100) == "x" * 100


@pytest.mark.parametrize("raw,why", [(None, "empty"), ("   ", "empty"), ("x" * 101, "at most 100"),
                                     ("a\nb", "control"), ("a\x00b", "control"), ("a\u200bb", "control")])
def test_clean_name_refuses(raw, why):
    with pytest.raises(InvalidField, match=why):
        clean_name(raw)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_spends_the_burst_then_refills_at_the_rate():
    clock = Clock()
    b = auth.Buckets(per_minute=60, burst=5, clock=clock)
    assert [b.take("k") for _ in range(6)] == [True] * 5 + [False]
    assert b.take("other")  # buckets are per key
    clock.now += 2.0  # one token a second
    assert [b.take("k") for _ in range(3)] == [True, True, False]
    clock.now += 3600
    assert [b.take("k") for _ in range(6)] == [True] * 5 + [False]  # never more than the burst


def test_a_cost_above_the_capacity_needs_a_full_bucket_and_leaves_a_debt():
    clock = Clock()
    b = auth.Buckets(per_minute=60, burst=3, clock=clock)
    assert b.take("k", cost=5)  # a full bucket admits one request dearer than the bucket: -2 left
    assert not b.take("k", cost=5)
    clock.now += 2.0  # back to 0
    assert not b.take("k")
    clock.now += 1.0
    assert b.take("k")


def test_the_oldest_buckets_go_first_beyond_the_tracked_limit(monkeypatch):
    monkeypatch.setattr(auth, "MAX_TRACKED", 3)
    b = auth.Buckets(per_minute=60, burst=1, clock=Clock())
    for key in "abcd":
        assert b.take(key)
    assert list(b.state) == ["b", "c", "d"]
    assert b.take("a")  # forgotten: a fresh bucket
    assert not b.take("d")


def test_image_requests_cost_more_than_reads():
    from core.settings import AuthSettings

    s = AuthSettings(image_request_cost=5)
    assert [auth.request_cost(p, s) for p in ("/analyze", "/register", "/analyze/batch", "/stats")] == [5, 5, 5, 1]


@pytest.mark.parametrize("p_male,gender,confidence", [(0.5, "male", 0.5), (0.93, "male", 0.93),
                                                       (0.4999, "female", 0.5001), (0.0, "female", 1.0)])
def test_the_one_gender_rule(p_male, gender, confidence):
    from api.inference import Face
    from pipeline.contract import gender_of

    assert gender_of(p_male) == (gender, pytest.approx(confidence))
    face = Face(box=np.array([10.4, 20.6, 110.5, 220.2], np.float32), score=0.9, embedding=np.zeros(128, np.float32),
                age=30.0, p_male=p_male, chip=np.zeros((1, 1, 3), np.uint8), landmarks=np.zeros((5, 2), np.float32))
    assert (face.gender, face.gender_confidence) == (gender, pytest.approx(confidence))
    assert face.xywh == (10, 21, 100, 200)  # the contract's bbox: whole original pixels
