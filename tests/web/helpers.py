"""Helpers shared by the web tests: submitting, waiting, and checking the error envelope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from quart.typing import TestClientProtocol
from quart.wrappers import Response

Client = TestClientProtocol  # not named Test*: pytest would try to collect it

TERMINAL = {"completed", "failed", "cancelled"}


async def submit(
    client: Client,
    task: str,
    payloads: list[dict[str, Any]],
    *,
    headers: dict[str, str] | None = None,
    **options: Any,
) -> list[str]:
    body = {"task_type": task, "data": [{"payload": p} for p in payloads], **options}
    response = await client.post("/api/v1/jobs", json=body, headers=headers or {})
    assert response.status_code == 202, await response.get_data()
    ids: list[str] = (await response.get_json())["taskIds"]
    return ids


async def get_job(client: Client, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, await response.get_data()
    job: dict[str, Any] = await response.get_json()
    return job


async def wait_for(
    client: Client,
    job_id: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until ``predicate(job)`` holds."""
    with anyio.fail_after(timeout):
        while True:
            job = await get_job(client, job_id)
            if predicate(job):
                return job
            await anyio.sleep(0.01)


def terminal(job: dict[str, Any]) -> bool:
    return job["status"] in TERMINAL


async def wait_all(
    client: Client, ids: list[str], predicate: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    return [await wait_for(client, job_id, predicate) for job_id in ids]


async def assert_error(
    response: Response | Awaitable[Response],
    status: int,
    code: str,
    *,
    path: str | None = None,
) -> dict[str, Any]:
    """Check the one error envelope, its headers, and return the body."""
    if not isinstance(response, Response):
        response = await response
    data = await response.get_data()
    assert response.status_code == status, data
    assert response.mimetype == "application/json", response.headers
    body: dict[str, Any] = await response.get_json()
    assert body["status"] == "error", body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert set(body) == {"status", "error", "request_id", "path"}, body
    assert set(body["error"]) <= {"code", "message", "details"}, body
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert float(response.headers["X-Process-Time-MS"]) >= 0
    if path is not None:
        assert body["path"] == path
    assert b"Traceback" not in data
    return body


def bad_fields(body: dict[str, Any]) -> set[str]:
    return {item["field"] for item in body["error"]["details"]["fields"]}
