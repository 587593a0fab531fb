"""What the client raises: the API's own error body, or a transport failure."""

from __future__ import annotations


class FaceAnalyticsError(Exception):
    """Base of every client error."""


class ApiError(FaceAnalyticsError):
    """The API answered ``{"success": false, "error": code, "message": text}`` (or a non-JSON error)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class ConnectionFailed(FaceAnalyticsError):
    """The API could not be reached (after the retries)."""
