"""Domain errors and the one place that maps them (and /health's answer) to HTTP status codes.

Every error leaves as ``{"success": false, "error": <code>, "message": <text>}``; no stack
trace ever reaches a client. Middleware that answers before the app (body size, keys, rate
limits) raises or renders these same errors, so a status code is written here only.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("api.errors")


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidImage(ApiError):
    code = "invalid_image"


class ImageTooCostly(ApiError):
    """Readable, but decoding it would cost too much (scans, header work, memory)."""

    code = "image_too_costly"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class NoFace(ApiError):
    code = "no_face"


class TooManyFaces(ApiError):
    code = "too_many_faces"


class LowQualityFace(ApiError):
    """/register: the face is below FA_QUALITY_REGISTER_MIN_SCORE; the code names the weakest part."""

    CODES = {"sharpness": "face_blurry", "pose": "face_not_frontal", "face_size": "face_too_small",
             "detection_score": "face_uncertain"}

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.code = self.CODES.get(reason, "low_quality_face")


class UrlNotAllowed(ApiError):
    """{"url": ...}: fetching switched off, host not allowed, or a private address."""
    code = "url_not_allowed"


class UrlFetchFailed(ApiError):
    code = "url_fetch_failed"


class MissingField(ApiError):
    """A required field is absent: the same answer FastAPI's own validation gives."""
    status, code = 422, "validation_error"


class InvalidField(ApiError):
    status, code = 422, "invalid_field"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class FaceMismatch(Conflict):
    code = "face_mismatch"


class FaceMatchesOtherPerson(Conflict):
    code = "face_matches_other_person"


class NameTaken(Conflict):
    code = "name_taken"


class LastSample(Conflict):
    code = "last_sample"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class Overloaded(ApiError):
    """This worker already has its share of image requests in flight: come back shortly."""

    status, code = 503, "overloaded"
    retry_after = 1


class ClientGone(ApiError):
    """The client disconnected before its answer was ready (nginx's 499; nobody receives it)."""

    status, code = 499, "client_closed_request"


class InferenceUnavailable(ApiError):
    status, code = 503, "inference_unavailable"


class DatabaseUnavailable(ApiError):
    status, code = 503, "database_unavailable"


def health_status(status: str) -> int:
    """/health: 200 only when every part is up; "degraded" and "unhealthy" are 503 for load balancers."""
    return 200 if status == "healthy" else 503


class GalleryReembedding(ApiError):
    """Identity is paused: the face_multitask version the gallery's embeddings are in is not
    the one that embedded this photo (or is not served); embeddings of two versions are never
    compared. Ends when the reembed job has run (docs/kubernetes.md)."""

    status, code = 503, "gallery_reembedding"
    retry_after = 30


class ModelVersionUnavailable(GalleryReembedding):
    """The gallery's face_multitask version is not served by Triton."""


class EmbeddingVersionMismatch(GalleryReembedding):
    """The photo was embedded by another version than the gallery's (it moved meanwhile)."""

    retry_after = 1


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"success": False, "error": code, "message": message}, status_code=status,
                        headers=headers)


def api_error_response(exc: ApiError) -> JSONResponse:
    retry = getattr(exc, "retry_after", None)
    return error_response(exc.status, exc.code, exc.message,
                          {"Retry-After": str(retry)} if retry is not None else None)


class ContainErrors:
    """Outermost ASGI wrapper: an exception that escapes the app (Starlette re-raises after its
    500 handler, so uvicorn would log a full traceback, locals and all) is logged as one line
    and answered with the JSON 500 if nothing was sent yet."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            log.error("unhandled %s on %s %s", type(exc).__name__, scope.get("method"), scope.get("path"))
            if not started:
                await error_response(500, "internal_error", "internal error")(scope, receive, send)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where}: {e.get('msg')}")
        return error_response(MissingField.status, MissingField.code, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # the type only: messages may carry user data
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(500, "internal_error", "internal error")
