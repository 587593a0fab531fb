"""Domain errors and the one place that maps them to HTTP responses.

Every error leaves as ``{"success": false, "error": <code>, "message": <text>}``; no stack
trace ever reaches a client.
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


class InvalidField(ApiError):
    status, code = 422, "invalid_field"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class InferenceUnavailable(ApiError):
    status, code = 503, "inference_unavailable"


class DatabaseUnavailable(ApiError):
    status, code = 503, "database_unavailable"


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": code, "message": message}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where}: {e.get('msg')}")
        return error_response(422, "validation_error", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # the type only: messages may carry user data
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(500, "internal_error", "internal error")
