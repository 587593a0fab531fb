"""Receiving Face Analytics webhooks: check the X-FA-Signature of a delivery.

    from face_analytics_client import verify_signature
    if not verify_signature(secret, request.headers["X-FA-Signature"], raw_body):
        return 400
    event = json.loads(raw_body)   # {"id", "type", "created_at", "data"}; dedupe on event["id"]

Compute the HMAC over the raw body as received, before any JSON parsing.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: float = 300.0,
                     now: float | None = None) -> bool:
    """True when `header` (t=<unix seconds>,v1=<hex>) is HMAC-SHA256(secret, "<t>." + body) and
    t is within `tolerance_s` of now (a replayed old delivery is refused)."""
    try:
        parts = dict(p.strip().split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))
