"""The client's errors: one class per error code of the API's envelope.

``ApiError`` carries the code, the HTTP status, the message, the details, the request id and,
for 429 and 503, the ``Retry-After`` seconds. A code this client does not know is a plain
``ApiError``; a server that cannot be reached is ``ServerUnreachable``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """An error answer of the TaskFlow API (or no answer at all)."""

    code = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int = 0,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status
        self.details = dict(details or {})
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" ({self.status})" if self.status else ""
        return f"{self.code}{where}: {self.message}"


class ServerUnreachable(ApiError):
    code = "server_unreachable"


class Unauthorized(ApiError):
    code = "unauthorized"


class Forbidden(ApiError):
    code = "forbidden"


class CrossSiteRequest(ApiError):
    """A change sent with the pages' session cookie from another site."""

    code = "cross_site_request"


class RateLimited(ApiError):
    code = "rate_limited"


class BacklogFull(ApiError):
    code = "backlog_full"


class ValidationFailed(ApiError):
    code = "validation_error"


class UnknownTask(ApiError):
    code = "unknown_task"


class UnknownQueue(ApiError):
    code = "unknown_queue"


class NotStorable(ApiError):
    code = "not_storable"


class BatchTooLarge(ApiError):
    code = "batch_too_large"


class InvalidId(ApiError):
    code = "invalid_id"


class InvalidJson(ApiError):
    code = "invalid_json"


class BadRequest(ApiError):
    code = "bad_request"


class JobNotFound(ApiError):
    code = "job_not_found"


class NotFound(ApiError):
    code = "not_found"


class NotDeadLetter(ApiError):
    code = "not_dead_letter"


class KeyNotFound(ApiError):
    code = "key_not_found"


class IdempotencyConflict(ApiError):
    code = "idempotency_conflict"


class InvalidTransition(ApiError):
    code = "invalid_transition"


class KeyExists(ApiError):
    code = "key_exists"


class ConfirmationRequired(ApiError):
    code = "confirmation_required"


class BodyTooLarge(ApiError):
    code = "body_too_large"


class UnsupportedMediaType(ApiError):
    code = "unsupported_media_type"


class MethodNotAllowed(ApiError):
    code = "method_not_allowed"


class ShuttingDown(ApiError):
    code = "shutting_down"


class Draining(ApiError):
    code = "draining"


class Unavailable(ApiError):
    code = "unavailable"


class StoreUnavailable(ApiError):
    code = "store_error"


class TransportUnavailable(ApiError):
    code = "transport_error"


class InternalError(ApiError):
    code = "internal_error"


BY_CODE: Mapping[str, type[ApiError]] = {
    cls.code: cls
    for cls in (
        ServerUnreachable, Unauthorized, Forbidden, CrossSiteRequest, RateLimited, BacklogFull,
        ValidationFailed,
        UnknownTask, UnknownQueue, NotStorable, BatchTooLarge, InvalidId, InvalidJson,
        BadRequest, JobNotFound, NotFound, NotDeadLetter, KeyNotFound, IdempotencyConflict,
        InvalidTransition, KeyExists, ConfirmationRequired, BodyTooLarge,
        UnsupportedMediaType, MethodNotAllowed, ShuttingDown, Draining, Unavailable,
        StoreUnavailable, TransportUnavailable, InternalError,
    )
}  # fmt: skip
"""The error class of each code of the envelope."""


def error_from(status: int, body: Any, headers: Mapping[str, str]) -> ApiError:
    """The error for an answer with ``status`` (>= 400) and its decoded ``body``."""
    retry = headers.get("retry-after")
    retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    envelope = body.get("error") if isinstance(body, dict) else None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("code"), str):
        return ApiError(
            f"HTTP {status} without the error envelope",
            code=f"http_{status}",
            status=status,
            retry_after=retry_after,
        )
    code = envelope["code"]
    cls = BY_CODE.get(code, ApiError)
    details = envelope.get("details")
    return cls(
        str(envelope.get("message") or code),
        code=code,
        status=status,
        details=details if isinstance(details, dict) else None,
        request_id=body.get("request_id") if isinstance(body, dict) else None,
        retry_after=retry_after,
    )
