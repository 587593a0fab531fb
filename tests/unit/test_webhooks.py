"""Webhook signing (server) against verification (client helper), event lists, backoff bounds."""

import pytest

from core.settings import WebhookSettings
from api.webhooks import Deliverer, parse_events, sign
from face_analytics_client import verify_signature


def test_a_signature_verifies_only_with_its_secret_body_and_a_fresh_timestamp():
    body = b'{"id":"evt_1","type":"person.deleted"}'
    header = sign("s3cret-s3cret-s3cret", 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature("s3cret-s3cret-s3cret", header, body, now=1_700_000_100)
    assert not verify_signature("s3cret-s3cret-s3cret", header, body, now=1_700_000_301)  # replayed later
    assert not verify_signature("another-secret-xx", header, body, now=1_700_000_000)
    assert not verify_signature("s3cret-s3cret-s3cret", header, body[:-1], now=1_700_000_000)
    assert not verify_signature("s3cret-s3cret-s3cret", "garbage", body)
    assert not verify_signature("s3cret-s3cret-s3cret", header.replace("t=1700000000", "t=1700000001"), body,
                                now=1_700_000_000)


def test_event_lists():
    assert parse_events(["person.known_seen", "person.deleted", "person.known_seen"]) == \
        "person.known_seen,person.deleted"
    assert parse_events(["*", "person.deleted"]) == "*"
    for bad in ([], ["person.sneezed"], [""]):
        with pytest.raises(ValueError):
            parse_events(bad)


def test_backoff_doubles_within_jitter_and_is_capped():
    d = Deliverer(None, None, WebhookSettings(backoff_base_s=2, backoff_max_s=60))
    for attempt, nominal in ((1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (30, 60)):
        assert 0.8 * nominal <= d.backoff(attempt) <= 1.2 * nominal
