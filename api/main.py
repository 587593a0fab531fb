"""FastAPI application: create_app() and its lifespan. `uvicorn api.main:app`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time

from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from api import errors, metrics
from api.admission import Admission
from api.auth import AuthGate
from api.deps import Services
from api.disconnect import WatchDisconnect
from api.errors import DatabaseUnavailable, api_error_response
from api.identity import IdentityService
from api.inference import InferenceClient
from api.repository import Repository, utcnow
from api.routes import analyze, health, persons, register, stats, verify, webhooks
from api.webhooks import Deliverer, Webhooks
from core.settings import PROJECT_ROOT, Settings, get_settings

log = logging.getLogger("api")

DESCRIPTION = """Face detection, age, gender and identity over REST, served by Triton.

Every face is matched against known people (registered with /register) and unknown people
the service remembers under a stable `unknown_<unix ts>_<4 digits>` id. Errors are JSON
`{"success": false, "error": <code>, "message": <text>}`."""


class BodySizeLimit:
    """Refuse bodies over the limit while they stream in, before they are buffered.

    A chunked body has no Content-Length: when it crosses the limit, reading stops and
    whatever the app answers (the form parser turns the error into a 400) is replaced by 413.
    """

    def __init__(self, app, max_bytes: int, batch_images: int = 1):
        self.app, self.max_bytes, self.batch_images = app, max_bytes, batch_images

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        # multipart framing adds a little around the file itself, base64 in a JSON body a third;
        # each image is checked against max_bytes on its own afterwards (api.uploads)
        limit = self.max_bytes * 4 // 3 + 64 * 1024
        if scope.get("path", "").rstrip("/") == "/analyze/batch":
            limit *= self.batch_images
        too_large_error = errors.PayloadTooLarge(f"the request is larger than the limit of {self.max_bytes} bytes")
        if length is not None and length.isdigit() and int(length) > limit:
            return await api_error_response(too_large_error)(scope, receive, send)
        seen, too_large, answered = 0, False, False

        async def limited_receive():
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    metrics.REJECTED.labels(too_large_error.code).inc()
                    raise too_large_error
            return message

        async def guarded_send(message):
            nonlocal answered
            if not too_large:
                return await send(message)
            if message["type"] == "http.response.start" and not answered:
                answered = True
                await api_error_response(too_large_error)(scope, receive, send)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except errors.PayloadTooLarge:
            if not answered:
                await api_error_response(too_large_error)(scope, receive, send)


async def _maintain(app: FastAPI, services: Services, ready: bool, stopping: asyncio.Event) -> None:
    """Connect the database if start-up could not, then keep this worker's gallery in sync
    and apply the retention setting once an hour. Ends when `stopping` is set: a cancel alone
    can be swallowed when it races an asyncio.timeout in a database call."""
    next_purge = next_model_check = 0.0
    while not stopping.is_set():
        try:
            if not ready:
                await services.repo.start()
                await services.identity.load()
                ready = True
                app.state.db_ready = True
                log.info("database ready; gallery holds %d people", len(services.identity.gallery))
            else:
                await services.identity.sync()
            await services.webhooks.refresh()  # which event types anyone subscribed to
            if time.monotonic() >= next_model_check:
                await services.identity.refresh_model(services.inference)
                next_model_check = time.monotonic() + 30
            days = services.settings.server.retention_days
            if ready and days > 0 and time.monotonic() >= next_purge:
                purged = await services.repo.purge_unknown_before(
                    utcnow() - dt.timedelta(days=days),
                    on_purged=lambda tx, ids: services.webhooks.deleted(tx, ids, "retention"))
                next_purge = time.monotonic() + 3600
                if purged:
                    log.info("retention: purged %d unknown people", len(purged))
        except DatabaseUnavailable:
            if ready:
                log.warning("database unavailable; will retry")
        except Exception as exc:  # noqa: BLE001 - never let the sync loop die
            log.warning("gallery sync failed: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), services.settings.matching.sync_interval_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        repo = Repository(settings)
        services = Services(settings, InferenceClient(settings.triton), repo, IdentityService(repo, settings),
                     Webhooks(repo, settings.webhooks))
        services.identity.webhooks = services.webhooks
        app.state.services = services
        app.state.db_ready = False
        try:
            await repo.start()
            await services.identity.load()
            await services.webhooks.refresh()
            app.state.db_ready = True
        except DatabaseUnavailable:
            log.warning("database unavailable at start-up; retrying in the background")
        with contextlib.suppress(Exception):  # Triton may come later; the loop retries
            await services.identity.refresh_model(services.inference)
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(_maintain(app, services, app.state.db_ready, stopping))]
        if settings.webhooks.delivery_enabled:
            tasks.append(asyncio.create_task(Deliverer(repo, services.webhooks, settings.webhooks).run(stopping)))
        try:
            yield
        finally:
            stopping.set()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.inference.close()
            await repo.close()

    app = FastAPI(title="Face Analytics API", version="1.0.0", description=DESCRIPTION,
                  lifespan=lifespan)
    errors.install(app)
    for module in (analyze, register, verify, stats, health, persons, webhooks):
        app.include_router(module.router)

    # the web console: static files only; it sends the API key itself (see api/ui/app.js)
    app.mount("/ui", StaticFiles(directory=PROJECT_ROOT / "api" / "ui", html=True), name="ui")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics():
        body, ctype = metrics.render(settings.prometheus.multiproc_dir)
        return Response(body, media_type=ctype)

    # Outermost last. Everything that refuses a request (size, key, rate, load) does so from
    # the request line and headers, before the body is read or a thread is spent on it.
    app.add_middleware(WatchDisconnect)  # inside Admission: only admitted requests are watched
    app.add_middleware(Admission, settings=settings.admission)
    app.add_middleware(AuthGate, auth=settings.auth)

    app.add_middleware(metrics.Observe)
    app.add_middleware(BodySizeLimit, max_bytes=settings.upload.max_bytes,
                       batch_images=settings.limits.batch_max_images)
    app.add_middleware(errors.ContainErrors)
    return app


app = create_app()
