"""Webhooks: identity events to subscribers' URLs, through a transactional outbox.

An identity change (a sighting, a new unknown person, a merge, a deletion) and its events commit
together: the events are rows of webhook_outbox written in the same transaction (one per event and
subscription), so an event exists exactly when its change does. A background task in every API
worker (Deliverer) claims due rows, POSTs them and marks them delivered; a failed attempt (no
answer, or any status outside 2xx) is retried with exponential backoff. A worker that dies between
sending and marking leaves the row claimed until its lease ends, and then it is sent again: delivery
is at least once, and receivers deduplicate by the event id (also the X-FA-Event-Id header).
Order is not guaranteed across retries.

Every request carries `X-FA-Signature: t=<unix seconds>,v1=<hex>`, where v1 is
HMAC-SHA256(secret, "<t>." + raw body): verify it with face_analytics_client.verify_signature or
the recipe in the README, and refuse old timestamps. Secrets are stored to sign (a hash could not
sign), shown once when a subscription is created, and never logged.

Cost when nobody subscribes: each worker keeps the set of event types someone wants (refreshed
by its maintenance loop every FA_MATCH_SYNC_INTERVAL_S, and at once after its own changes), and
/analyze builds no event of a type nobody wants. A new subscription thus receives events from every
worker within that interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import uuid
from dataclasses import dataclass
import ipaddress
from urllib.parse import urlsplit

import httpx

from api.errors import UrlFetchFailed, UrlNotAllowed
from api.repository import Repository, Tx, utcnow
from api.url_fetch import host_allowed, is_public
from api.url_fetch import pin as url_pin
from core.settings import WebhookSettings

log = logging.getLogger("api.webhooks")

EVENT_TYPES = ("person.known_seen", "person.unknown_created", "person.unknown_seen", "person.merged",
               "person.deleted")
ANY = "*"
USER_AGENT = "face-analytics-webhooks/1"


@dataclass
class Event:
    type: str
    data: dict
    id: str = ""
    created_at: dt.datetime | None = None

    def __post_init__(self):
        self.id = self.id or f"evt_{uuid.uuid4().hex}"
        self.created_at = self.created_at or utcnow()

    def body(self) -> str:
        return json.dumps({"id": self.id, "type": self.type, "created_at": self.created_at.isoformat() + "Z",
                           "data": self.data}, separators=(",", ":"), ensure_ascii=False)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-FA-Signature header: t=<timestamp>,v1=HMAC-SHA256(secret, "<t>." + body) in hex."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def parse_events(raw) -> str:
    """A subscription's event list, stored as a comma list; "*" for every type."""
    items = [raw] if isinstance(raw, str) else list(raw or [])
    items = [e.strip() for part in items for e in str(part).split(",") if e.strip()]
    if not items:
        raise ValueError("events: name at least one of " + ", ".join(EVENT_TYPES) + ' (or "*")')
    unknown = sorted(set(items) - set(EVENT_TYPES) - {ANY})
    if unknown:
        raise ValueError(f"events: unknown {', '.join(unknown)}; choose from {', '.join(EVENT_TYPES)} or \"*\"")
    return ANY if ANY in items else ",".join(dict.fromkeys(items))


def check_url(url: str, settings: WebhookSettings) -> str:
    """The subscription's URL as stored; ValueError says why it is refused. A host name is
    resolved at each delivery, not here (DNS answers change): see `pin`."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url: an absolute http:// or https:// URL is required")
    if parts.username or parts.password:
        raise ValueError("url: credentials in the URL are not accepted (the signature authenticates us)")
    if settings.allowed_hosts and not host_allowed(parts.hostname, settings.allowed_hosts):
        raise ValueError(f"url: {parts.hostname} is not in the allowed hosts (FA_WEBHOOK_ALLOWED_HOSTS)")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    if literal is not None and not settings.allow_private and not is_public(literal):
        raise ValueError("url: a private or reserved address; set FA_WEBHOOK_ALLOW_PRIVATE=true for receivers "
                         "inside your network")
    return url


class AddressNotAllowed(Exception):
    """The URL's host resolves to an address deliveries may not go to (or does not resolve)."""


async def pin(url: str, settings: WebhookSettings) -> tuple[str, dict, dict]:
    """(URL with the checked address in place of the host, headers, httpx extensions), by the
    URL fetch's own check (api.url_fetch.pin): public addresses only unless
    FA_WEBHOOK_ALLOW_PRIVATE, and the connection goes to the address checked."""
    parts = urlsplit(url)
    try:
        pinned, host = await url_pin(parts, settings.allow_private)
    except UrlFetchFailed:
        raise AddressNotAllowed("unresolvable") from None
    except UrlNotAllowed:
        raise AddressNotAllowed("address_not_allowed") from None
    return pinned, {"Host": host}, {"sni_hostname": parts.hostname}


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def _matches(events: str, event_type: str) -> bool:
    types = events.split(",")
    return ANY in types or event_type in types


def face_data(face) -> dict:
    """A sighting's face in an event: the /analyze fields without identity (which the event names)."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    male = face.p_male >= 0.5
    return {"bbox": {"x": round(x1), "y": round(y1), "width": round(x2 - x1), "height": round(y2 - y1)},
            "confidence": round(float(face.score), 4), "age": round(float(face.age), 1),
            "gender": "male" if male else "female",
            "gender_confidence": round(float(face.p_male if male else 1 - face.p_male), 4)}


class Webhooks:
    """The event side: which types are wanted, and queueing events inside a transaction."""

    def __init__(self, repo: Repository, settings: WebhookSettings):
        self.repo, self.settings = repo, settings
        self.wanted: set[str] | None = None  # None: not known yet, so ask the database each time
        self.queued = asyncio.Event()  # set after a commit that queued deliveries: wakes the Deliverer

    def wants(self, event_type: str) -> bool:
        return self.wanted is None or ANY in self.wanted or event_type in self.wanted

    async def refresh(self) -> None:
        self.wanted = await self.repo.subscribed_event_types()

    async def queue(self, tx: Tx, events: list[Event]) -> int:
        """One outbox row per event and subscription that wants it, in the caller's transaction."""
        events = [e for e in events if self.wants(e.type)]
        if not events:
            return 0
        subs = await self.repo.subscriptions_for_events(tx)
        rows = [(sid, e.id, e.type, e.body(), e.created_at) for e in events for sid, types in subs
                if _matches(types, e.type)]
        await self.repo.queue_deliveries(tx, rows)
        return len(rows)

    async def deleted(self, tx: Tx, person_ids: list[str], reason: str) -> None:
        await self.queue(tx, [Event("person.deleted", {"person_id": p, "reason": reason}) for p in person_ids])


class Deliverer:
    """The background task: claim due outbox rows, POST them signed, record the outcome."""

    def __init__(self, repo: Repository, hooks: Webhooks, settings: WebhookSettings):
        self.repo, self.hooks, self.settings = repo, hooks, settings
        self.worker = uuid.uuid4().hex[:12]
        self.next_prune = 0.0

    def backoff(self, attempts: int) -> float:
        delay = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempts - 1))
        return delay * random.uniform(0.8, 1.2)

    async def _send(self, client: httpx.AsyncClient, row: tuple) -> tuple[int | None, str | None]:
        """(status, error) of one attempt; error None on success. The error names the failure's
        kind only: never the secret, never the response body."""
        oid, event_id, event_type, payload, attempts, url, secret = row
        if url is None:
            return None, "subscription_deleted"
        body = payload.encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-FA-Event": event_type, "X-FA-Event-Id": event_id,
                   "X-FA-Delivery-Attempt": str(attempts + 1),
                   "X-FA-Signature": sign(secret, int(time.time()), body)}
        try:
            pinned, host, extensions = await pin(url, self.settings)
            r = await client.post(pinned, content=body, headers={**headers, **host}, extensions=extensions)
        except AddressNotAllowed as exc:
            return None, str(exc)
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        return r.status_code, None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """One round: returns how many deliveries were attempted."""
        s, now = self.settings, utcnow()
        claim = f"{self.worker}-{uuid.uuid4().hex[:8]}"
        lease = s.lease_s + s.timeout_s
        rows = await self.repo.claim_deliveries(claim, now, now + dt.timedelta(seconds=lease), s.batch)
        if not rows:
            return 0
        outcomes = await asyncio.gather(*(self._send(client, r) for r in rows))
        done, now = [], utcnow()
        for row, (status, error) in zip(rows, outcomes):
            attempts = row[4] + 1
            if error is None:
                done.append((row[0], claim, "delivered", attempts, now, status, None, now))
            elif row[5] is None or attempts >= s.max_attempts:
                done.append((row[0], claim, "failed", attempts, now, status, error, now))
                log.warning("webhook delivery %s of %s failed for good after %d attempts (%s)",
                            row[0], row[2], attempts, error)
            else:
                retry_at = now + dt.timedelta(seconds=self.backoff(attempts))
                done.append((row[0], claim, "pending", attempts, retry_at, status, error, None))
        await self.repo.finish_deliveries(done)
        return len(rows)

    async def run(self, stopping: asyncio.Event) -> None:
        from api.errors import DatabaseUnavailable

        s = self.settings
        async with httpx.AsyncClient(timeout=s.timeout_s, follow_redirects=False, trust_env=False) as client:
            while not stopping.is_set():
                busy = 0
                self.hooks.queued.clear()  # before looking: a commit from now on wakes the wait below
                try:
                    busy = await self.deliver_due(client)
                    if time.monotonic() >= self.next_prune:
                        await self.repo.prune_deliveries(utcnow() - dt.timedelta(days=s.keep_delivered_days))
                        self.next_prune = time.monotonic() + 3600
                except DatabaseUnavailable:
                    pass  # the outbox keeps the events; the next round retries
                except Exception as exc:  # noqa: BLE001 - the delivery task must not die
                    log.warning("webhook delivery round failed: %s", type(exc).__name__)
                if busy:
                    continue  # more may be due
                waiters = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(self.hooks.queued.wait())]
                try:
                    await asyncio.wait(waiters, timeout=s.poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
