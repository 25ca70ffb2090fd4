"""One set of bounds: what the OpenAPI document shows, REST parsing and the Python API
enforce alike (taskflow/limits.py)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.runtime import Runtime
from actors.tree import TreeConfig
from taskflow import limits
from taskflow.config import Settings
from taskflow.errors import ValidationError
from taskflow.rabbitmq.topology import MAX_PRIORITY
from tests.web.helpers import Client, assert_error

pytestmark = pytest.mark.anyio


def schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["components"]["schemas"][name]
    return found


async def test_the_openapi_document_shows_every_bound_the_server_enforces(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).get_json()
    submit = schema(doc, "SubmitRequest")["properties"]

    def bound(prop: dict[str, Any], key: str) -> Any:
        options = prop.get("anyOf", [prop])
        return next(o[key] for o in options if key in o)

    assert bound(submit["priority"], "minimum") == limits.MIN_PRIORITY
    assert bound(submit["priority"], "maximum") == limits.MAX_PRIORITY
    assert bound(submit["max_attempts"], "maximum") == limits.MAX_ATTEMPTS
    assert bound(submit["delay_seconds"], "maximum") == limits.MAX_DELAY_SECONDS
    assert bound(submit["timeout_seconds"], "maximum") == limits.MAX_TIMEOUT_SECONDS
    assert bound(submit["task_type"], "maxLength") == limits.MAX_NAME
    assert bound(submit["data"], "maxItems") == limits.MAX_BATCH
    for path in ("/api/v1/jobs", "/api/v1/dlq"):
        query = {p["name"]: p["schema"] for p in doc["paths"][path]["get"]["parameters"]}
        assert bound(query["limit"], "maximum") == limits.MAX_PAGE, path
        assert bound(query["offset"], "maximum") == limits.MAX_OFFSET, path


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", limits.MAX_PRIORITY + 1),
        ("max_attempts", limits.MAX_ATTEMPTS + 1),
        ("delay_seconds", limits.MAX_DELAY_SECONDS + 1),
        ("timeout_seconds", limits.MAX_TIMEOUT_SECONDS + 1),
    ],
)
async def test_rest_and_the_python_api_refuse_the_same_bounds(
    client: Client, runtime: Runtime, field: str, value: float
) -> None:
    body = {"task_type": "echo", "data": [{"payload": {}}], field: value}
    await assert_error(await client.post("/api/v1/jobs", json=body), 422, "validation_error")
    keyword = {"delay_seconds": "delay", "timeout_seconds": "timeout"}.get(field, field)
    with pytest.raises(ValidationError) as caught:
        await runtime.submit("echo", {}, **{keyword: value})
    assert keyword in caught.value.details["fields"]


def test_the_topology_and_the_defaults_come_from_the_same_place() -> None:
    assert MAX_PRIORITY == limits.MAX_PRIORITY
    settings = Settings(lease_seconds=4.0, retention_failed=60.0, concurrency=3)
    config = TreeConfig.from_settings(settings, owner="me")
    assert (config.lease, config.retention_failed, config.concurrency) == (4.0, 60.0, 3)
    assert TreeConfig().lease == Settings().lease_seconds == limits.LEASE_SECONDS
    assert TreeConfig().retention_completed == Settings().retention_completed
