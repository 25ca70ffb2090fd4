"""ASGI layer around the app: request ids, timing, and a last-resort 500.

Every HTTP response gets ``X-Request-ID`` (the client's, if it is at most 128 printable ASCII
characters, else a new uuid4) and ``X-Process-Time-MS``. The id is kept in the ASGI scope so
the error envelope built inside Quart reports the same id as the header.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

from taskflow.limits import MAX_REQUEST_ID
from taskflow.log import get_logger

log = get_logger("taskflow.web")

REQUEST_ID_KEY = "taskflow.request_id"
REQUEST_ID_HEADER = b"x-request-id"
PROCESS_TIME_HEADER = b"x-process-time-ms"

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


def clean_request_id(value: str | None) -> str | None:
    """The client's id if usable: 1..128 printable ASCII characters after stripping."""
    if value is None:
        return None
    value = value.strip()
    if not 0 < len(value) <= MAX_REQUEST_ID:
        return None
    if any(not 0x20 <= ord(ch) < 0x7F for ch in value):
        return None
    return value


def request_id_of(scope: Scope | dict[str, Any]) -> str:
    """The id chosen for this request (set by ``with_request_context``; made up if missing)."""
    raw = cast(dict[str, Any], scope)
    rid = raw.get(REQUEST_ID_KEY)
    if not isinstance(rid, str):
        rid = _choose_request_id(raw)
        raw[REQUEST_ID_KEY] = rid
    return rid


def _choose_request_id(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers", ()):
        if name.lower() == REQUEST_ID_HEADER:
            chosen = clean_request_id(value.decode("latin-1"))
            if chosen is not None:
                return chosen
            break
    return str(uuid.uuid4())


async def with_request_context(
    app: ASGIApp, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """Run ``app`` for one ASGI connection, adding the request id and timing headers (to a
    WebSocket's accept, or to the HTTP response that refuses its handshake)."""
    if scope["type"] == "websocket":
        await app(scope, receive, _websocket_headers(scope, send))
        return
    if scope["type"] != "http":
        await app(scope, receive, send)
        return
    rid = request_id_of(scope)
    started_at = time.perf_counter()
    response_started = False

    async def send_with_headers(message: ASGISendEvent) -> None:
        nonlocal response_started
        if message["type"] == "http.response.start":
            response_started = True
            elapsed_ms = (time.perf_counter() - started_at) * 1000.0
            headers = [
                (name, value)
                for name, value in message.get("headers", ())
                if name.lower() not in (REQUEST_ID_HEADER, PROCESS_TIME_HEADER)
            ]
            headers.append((REQUEST_ID_HEADER, rid.encode("ascii")))
            headers.append((PROCESS_TIME_HEADER, f"{elapsed_ms:.2f}".encode("ascii")))
            message = {**message, "headers": headers}
        await send(message)

    try:
        await app(scope, receive, send_with_headers)
    except Exception:
        # Quart turns handler errors into responses; this is for errors of Quart itself.
        log.exception("request_crashed", request_id=rid, path=scope.get("path"))
        if response_started:
            raise
        body = msgspec.json.encode(
            {
                "status": "error",
                "error": {"code": "internal_error", "message": "An unexpected error occurred."},
                "request_id": rid,
                "path": scope.get("path", ""),
            }
        )
        await send_with_headers(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                ],
                "trailers": False,
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _websocket_headers(scope: Scope, send: ASGISendCallable) -> ASGISendCallable:
    rid = request_id_of(scope).encode("ascii")
    started_at = time.perf_counter()

    async def send_with_headers(message: ASGISendEvent) -> None:
        kind = message["type"]
        if kind in ("websocket.accept", "websocket.http.response.start"):
            raw = cast(dict[str, Any], message)
            headers = [(n, v) for n, v in raw.get("headers", ()) if n.lower() != REQUEST_ID_HEADER]
            headers.append((REQUEST_ID_HEADER, rid))
            if kind == "websocket.http.response.start":
                elapsed_ms = (time.perf_counter() - started_at) * 1000.0
                headers.append((PROCESS_TIME_HEADER, f"{elapsed_ms:.2f}".encode("ascii")))
            message = cast(ASGISendEvent, {**raw, "headers": headers})
        await send(message)

    return send_with_headers
