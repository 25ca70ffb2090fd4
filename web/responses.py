"""JSON responses, the API's own error type, and the one error envelope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import msgspec
from quart import Response, has_request_context, has_websocket_context, request, websocket

from web.middleware import request_id_of
from web.schemas import ErrorBody, ErrorEnvelope


def _fallback(value: Any) -> Any:
    """Encode what msgspec does not know (a task's odd result type) as its ``str``."""
    return str(value)


_encoder = msgspec.json.Encoder(enc_hook=_fallback)


def encode(body: Any) -> bytes:
    return _encoder.encode(body)


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A response whose body is ``body`` (a struct, dict or list) encoded as JSON."""
    return Response(
        encode(body),
        status=status,
        headers=dict(headers or {}),
        content_type="application/json",
    )


class ApiError(Exception):
    """An error reported to the client as ``status`` with a stable ``code``.

    ``details`` is any JSON-ready mapping (for validation errors: ``{"fields": [...]}``);
    ``headers`` are added to the response (``Retry-After``, ``Allow``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details) if details is not None else None
        self.headers = dict(headers or {})


class FieldErrors:
    """Collects one message per bad field; ``raise_if_any`` raises a 422 listing them all."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append({"field": field, "message": message})

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, message: str = "The request is invalid.") -> None:
        if self.items:
            raise validation_error(self.items, message)


def validation_error(
    fields: list[dict[str, str]], message: str = "The request is invalid."
) -> ApiError:
    return ApiError(422, "validation_error", message, details={"fields": fields})


def current_target() -> tuple[str, str, dict[str, Any]]:
    """``(method, path, ASGI scope)`` of the HTTP request or WebSocket being handled (empty
    outside both)."""
    if has_request_context():
        return request.method, request.path, cast(dict[str, Any], request.scope)
    if has_websocket_context():
        return "WEBSOCKET", websocket.path, cast(dict[str, Any], websocket.scope)
    return "", "", {}


def error_response(error: ApiError) -> Response:
    """The envelope ``{"status": "error", "error": {...}, "request_id", "path"}``."""
    _, path, scope = current_target()
    rid = request_id_of(scope) if scope else ""
    envelope = ErrorEnvelope(
        error=ErrorBody(code=error.code, message=error.message, details=error.details),
        request_id=rid,
        path=path,
    )
    return json_response(envelope, error.status, error.headers)
