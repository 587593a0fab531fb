"""/webhooks: subscriptions to identity events (administration). Delivery: api.webhooks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.errors import InvalidField, NotFound
from api.deps import RepositoryDep, SettingsDep, WebhooksDep
from api.schemas import (DeliveryCounts, Webhook, WebhookCreate, WebhookCreated, WebhookDeliveries, WebhookDelivery,
                         WebhookList)
from api.webhooks import check_url, new_secret, parse_events

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

WebhookId = Annotated[int, Path(ge=1, le=2**62)]

DESCRIPTION = """Each event is POSTed as JSON `{"id", "type", "created_at", "data"}` with the headers
`X-FA-Event`, `X-FA-Event-Id` (deduplicate on it: delivery is at least once), `X-FA-Delivery-Attempt`
and `X-FA-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>`. Any answer
outside 2xx, or none within FA_WEBHOOK_TIMEOUT_S, is retried with exponential backoff up to
FA_WEBHOOK_MAX_ATTEMPTS times. Events are written in the transaction of the identity change, so none is
lost when the receiver or the API is down: they are sent once both are back."""


@router.post("", response_model=WebhookCreated, status_code=201, summary="Subscribe a URL to identity events",
             description=DESCRIPTION)
async def create_webhook(repo: RepositoryDep, hooks: WebhooksDep, settings: SettingsDep, body: WebhookCreate):
    try:
        url, events = check_url(body.url, settings.webhooks), parse_events(body.events)
    except ValueError as exc:
        raise InvalidField(str(exc)) from None
    secret = body.secret or new_secret()
    sid, created = await repo.add_subscription(url, secret, events, body.description)
    await hooks.refresh()
    return WebhookCreated(id=sid, url=url, events=events.split(","), description=body.description,
                          created_at=created, secret=secret)


@router.get("", response_model=WebhookList, summary="Subscriptions with their delivery counts (no secrets)")
async def list_webhooks(repo: RepositoryDep):
    rows = await repo.list_subscriptions()
    return WebhookList(webhooks=[
        Webhook(id=r[0], url=r[1], events=r[2].split(","), description=r[3], created_at=r[4],
                deliveries=DeliveryCounts(pending=r[5], delivered=r[6], failed=r[7]), last_error=r[8]) for r in rows])


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveries, summary="A subscription's latest deliveries")
async def webhook_deliveries(repo: RepositoryDep, webhook_id: WebhookId):
    rows = await repo.deliveries(webhook_id)
    return WebhookDeliveries(deliveries=[WebhookDelivery(
        id=r[0], event_id=r[1], event_type=r[2], state=r[3], attempts=r[4], last_status=r[5], last_error=r[6],
        created_at=r[7], finished_at=r[8]) for r in rows])


@router.delete("/{webhook_id}", summary="Unsubscribe (pending deliveries are dropped)")
async def delete_webhook(repo: RepositoryDep, hooks: WebhooksDep, webhook_id: WebhookId):
    if not await repo.delete_subscription(webhook_id):
        raise NotFound(f"no webhook {webhook_id}")
    await hooks.refresh()
    return {"success": True, "message": f"webhook {webhook_id} deleted"}
