"""Every error becomes the one envelope: API errors, TaskFlow errors, HTTP errors, crashes.

TaskFlow errors are mapped by their stable ``code``. Unavailable dependencies answer 503 with
``Retry-After``; anything unexpected answers a generic 500 ``internal_error`` and is logged
here with its traceback, which never reaches the client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from quart import Quart, Response, current_app
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from taskflow.errors import TaskflowError
from web.middleware import log, request_id_of
from web.responses import ApiError, current_target, error_response

RETRY_AFTER_SECONDS = 5

TASKFLOW_STATUS: Mapping[str, int] = {
    "unknown_task": 422,
    "validation_error": 422,
    "not_storable": 422,
    "job_not_found": 404,
    "idempotency_conflict": 409,
    "invalid_transition": 409,
    "key_exists": 409,
    "key_not_found": 404,
    "shutting_down": 503,
    "store_error": 503,
    "transport_error": 503,
}
"""HTTP status per TaskFlow error code; other codes are unexpected (500)."""

UNAVAILABLE = frozenset({"shutting_down", "store_error", "transport_error"})
"""Codes whose message may carry driver details: the client gets the class's default."""

HTTP_CODES: Mapping[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}

GENERIC_500 = "An unexpected error occurred."


def register_error_handlers(app: Quart) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(TaskflowError, _taskflow_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


async def _api_error(error: ApiError) -> Response:
    return error_response(error)


async def _taskflow_error(error: TaskflowError) -> Response:
    return error_response(from_taskflow_error(error))


def from_taskflow_error(error: TaskflowError) -> ApiError:
    status = TASKFLOW_STATUS.get(error.code)
    if status is None:
        return _internal(error)
    if error.code in UNAVAILABLE:
        _, path, scope = current_target()
        log.warning(
            "dependency_unavailable",
            code=error.code,
            error=str(error),
            request_id=request_id_of(scope),
            path=path,
        )
        message = error.message if error.code == "shutting_down" else _default_message(error)
        return ApiError(
            status, error.code, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return ApiError(status, error.code, error.message, details=_details(error.details))


def _default_message(error: TaskflowError) -> str:
    doc = type(error).__doc__ or error.code
    return doc.strip().splitlines()[0]


def _details(details: Mapping[str, Any]) -> dict[str, Any] | None:
    if not details:
        return None
    out = dict(details)
    fields = out.get("fields")
    if isinstance(fields, Mapping):  # {"priority": "must be ..."} -> the API's list form
        out["fields"] = [{"field": str(k), "message": str(v)} for k, v in fields.items()]
    return out


async def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status == 500:
        return error_response(_internal(error))
    code = HTTP_CODES.get(status) or _snake(error.name)
    message = error.description or error.name
    headers: dict[str, str] = {}
    details: dict[str, Any] | None = None
    if status == 404:
        message = "No route matches this path."
    elif status == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = f"The request body is larger than {limit} bytes."
        details = {"max_body_bytes": limit}
    elif isinstance(error, MethodNotAllowed):
        allowed = sorted(error.valid_methods or ())
        message = f"Method {current_target()[0]} is not allowed here."
        headers["Allow"] = ", ".join(allowed)
        return error_response(
            ApiError(status, code, message, details={"allowed": allowed}, headers=headers)
        )
    return error_response(ApiError(status, code, message, details=details, headers=headers))


async def _unexpected(error: Exception) -> Response:
    return error_response(_internal(error))


def _internal(error: BaseException) -> ApiError:
    error = getattr(error, "original_exception", None) or error  # InternalServerError wraps
    method, path, scope = current_target()
    log.error(
        "request_failed",
        request_id=request_id_of(scope),
        path=path,
        method=method,
        error=repr(error),
        exc_info=error,
    )
    return ApiError(500, "internal_error", GENERIC_500)


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "http_error"
