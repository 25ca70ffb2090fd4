"""Health, metrics, the OpenAPI document, and the error envelope for every kind of error."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import msgspec
import pytest
from quart import Quart
from structlog.testing import capture_logs

from actors.runtime import Runtime
from taskflow.errors import (
    ConfigError,
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    ShuttingDown,
    StoreError,
    TaskflowError,
    TransportError,
    UnknownTask,
    ValidationError,
)
from taskflow.memory import MemoryTransport
from tests.web.helpers import Client, assert_error, submit, terminal, wait_all
from web.middleware import with_request_context
from web.schemas import MetricsResponse

pytestmark = pytest.mark.anyio


# ------------------------------------------------------------------ health and metrics


async def test_health_probes_every_dependency(client: Client) -> None:
    response = await client.get("/api/v1/health")
    assert response.status_code == 200
    body = await response.get_json()
    assert body["status"] == "ok"
    assert body["checks"] == {"store": "ok", "transport": "ok"}
    assert body["version"]
    assert response.headers["X-Request-ID"]


async def test_health_is_503_naming_the_failed_dependency(client: Client, runtime: Runtime) -> None:
    transport = runtime.resources.transport
    assert isinstance(transport, MemoryTransport)
    transport.outage = ConnectionError("broker at amqp://secret@host refused the connection")
    with capture_logs() as logs:
        response = await client.get("/api/v1/health")
    body = await assert_error(response, 503, "unavailable", path="/api/v1/health")
    assert body["error"]["details"]["failed"] == ["transport"]
    assert body["error"]["details"]["checks"] == {
        "store": "ok",
        "transport": "error: TransportError",
    }
    assert "secret" not in json.dumps(body)
    assert response.headers["Retry-After"] == "5"
    assert any(entry["event"] == "health_check_failed" for entry in logs)


async def test_metrics_snapshot(client: Client, runtime: Runtime) -> None:
    ids = await submit(client, "echo", [{}, {}])
    await wait_all(client, ids, terminal)
    await runtime.wait_idle(timeout=10)
    response = await client.get("/api/v1/metrics")
    assert response.status_code == 200
    body = await response.get_json()
    seed = {"avgProcessingTimeSeconds", "dashboardMetrics", "systemHealth"}
    documented = set(MetricsResponse.__struct_fields__) - {
        "avg_processing_time_seconds",
        "dashboard_metrics",
        "system_health",
    }
    assert set(body) == documented | seed  # the documented shape, the seed's names
    msgspec.convert(body, MetricsResponse)
    assert set(body["jobs_by_status"]) >= {"pending", "completed", "failed"}  # refreshed each 1 s
    assert body["tasks"]["echo"]["succeeded"] == 2


# ------------------------------------------------------------------ OpenAPI


def rules_under(app: Quart, prefix: str) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(prefix) or rule.websocket:  # OpenAPI has no WebSockets
            continue
        if rule.endpoint.startswith("pages."):  # HTML pages (the seed's demo page)
            continue
        path = re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in {"HEAD", "OPTIONS"}:
                found.add((method.lower(), path))
    return found


async def test_openapi_matches_the_routes(app: Quart, client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = await response.get_json()
    documented = {
        (method, path)
        for path, item in document["paths"].items()
        if path.startswith("/api/v1") or path == "/metrics"
        for method in item
    }
    routes = rules_under(app, "/api/v1") | rules_under(app, "/metrics")
    assert documented == routes
    assert len(routes) == 21


async def test_openapi_references_resolve(client: Client) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    text = json.dumps(document)
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text))
    assert refs
    assert refs <= set(document["components"]["schemas"])
    submit_op = document["paths"]["/api/v1/jobs"]["post"]
    assert {"200", "202", "413", "415", "422"} <= set(map(str, submit_op["responses"]))
    assert "taskType" in submit_op["description"] or "camelCase" in json.dumps(submit_op)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_interactive_docs(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert "openapi.json" in (await response.get_data(as_text=True))


# ------------------------------------------------------------------ envelope, ids, timing


async def test_unknown_route_is_a_404_envelope(client: Client) -> None:
    await assert_error(
        client.get("/api/v1/nothing-here"), 404, "not_found", path="/api/v1/nothing-here"
    )
    await assert_error(client.get("/api/v1//jobs"), 404, "not_found")
    await assert_error(client.get("/api/v1/jobs/"), 404, "not_found")


async def test_wrong_method_is_a_405_envelope(client: Client) -> None:
    response = await client.delete("/api/v1/jobs")
    body = await assert_error(response, 405, "method_not_allowed", path="/api/v1/jobs")
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert "POST" in body["error"]["details"]["allowed"]
    await assert_error(client.get("/api/v1/jobs/action/retry"), 405, "method_not_allowed")


async def test_a_good_request_id_is_echoed(client: Client) -> None:
    response = await client.get("/api/v1/health", headers={"X-Request-ID": "trace-abc_123"})
    assert response.headers["X-Request-ID"] == "trace-abc_123"
    assert re.fullmatch(r"\d+\.\d{2}", response.headers["X-Process-Time-MS"])
    body = await assert_error(
        client.get("/api/v1/jobs/zzz", headers={"X-Request-ID": "trace-2"}), 422, "invalid_id"
    )
    assert body["request_id"] == "trace-2"


@pytest.mark.parametrize("bad", ["x" * 129, "with\x01control", "   "])
async def test_a_bad_request_id_is_replaced(client: Client, bad: str) -> None:
    response = await client.get("/api/v1/nope", headers={"X-Request-ID": bad})
    body = await assert_error(response, 404, "not_found")
    assert uuid.UUID(body["request_id"]).version == 4


async def test_a_crash_is_a_generic_500_and_is_logged(
    client: Client, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(runtime, "metrics", boom)
    with capture_logs() as logs:
        response = await client.get("/api/v1/metrics", headers={"X-Request-ID": "r-500"})
    body = await assert_error(response, 500, "internal_error", path="/api/v1/metrics")
    assert "secret" not in json.dumps(body)
    assert body["request_id"] == "r-500"
    (entry,) = [e for e in logs if e["event"] == "request_failed"]
    assert entry["request_id"] == "r-500"
    assert isinstance(entry["exc_info"], RuntimeError)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UnknownTask("no task named 'x'", task="x"), 422, "unknown_task"),
        (ValidationError("invalid job", fields={"priority": "bad"}), 422, "validation_error"),
        (JobNotFound("gone"), 404, "job_not_found"),
        (IdempotencyConflict(), 409, "idempotency_conflict"),
        (InvalidTransition(), 409, "invalid_transition"),
        (ShuttingDown(), 503, "shutting_down"),
        (StoreError("password=hunter2 at db:5432"), 503, "store_error"),
        (TransportError("amqp://user:hunter2@mq"), 503, "transport_error"),
        (ConfigError("hunter2"), 500, "internal_error"),
        (TaskflowError("hunter2"), 500, "internal_error"),
    ],
)
async def test_taskflow_errors_map_by_code(
    client: Client,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
    code: str,
) -> None:
    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(runtime, "get", failing)
    path = f"/api/v1/jobs/{uuid.uuid4()}"
    response = await client.get(path)
    body = await assert_error(response, status, code, path=path)
    assert "hunter2" not in json.dumps(body)
    if status == 503:
        assert response.headers["Retry-After"] == "5"
    else:
        assert "Retry-After" not in response.headers
    if code == "validation_error":
        assert body["error"]["details"]["fields"] == [{"field": "priority", "message": "bad"}]


async def test_shutting_down_on_submit_is_503(client: Client, runtime: Runtime) -> None:
    await runtime.tree.ingest.stop()  # what a graceful shutdown does first
    response = await client.post(
        "/api/v1/jobs", json={"task_type": "echo", "data": [{"payload": {}}]}
    )
    await assert_error(response, 503, "shutting_down")
    assert response.headers["Retry-After"] == "5"


async def test_an_error_escaping_quart_still_gets_the_envelope() -> None:
    # The ASGI layer's last resort, for errors raised outside Quart's own handling
    async def broken_app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("deep secret")

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope: Any = {"type": "http", "path": "/x", "headers": [(b"x-request-id", b"rid-9")]}
    with capture_logs() as logs:
        await with_request_context(broken_app, scope, receive, send)
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 500
    assert headers[b"x-request-id"] == b"rid-9"
    assert headers[b"content-type"] == b"application/json"
    assert float(headers[b"x-process-time-ms"]) >= 0
    envelope = json.loads(body["body"])
    assert envelope == {
        "status": "error",
        "error": {"code": "internal_error", "message": "An unexpected error occurred."},
        "request_id": "rid-9",
        "path": "/x",
    }
    assert [e["event"] for e in logs] == ["request_crashed"]
