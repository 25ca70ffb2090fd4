"""Admission control: at TASKFLOW_MAX_BACKLOG pending jobs, submissions get 429
``backlog_full`` with a Retry-After; reads, cancels and replays go on; room frees as the
backlog drains."""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from actors.runtime import Runtime
from taskflow.config import Settings
from taskflow.jobs import JobStatus
from tests.web.helpers import Client, assert_error, submit
from web.app import create_app

pytestmark = pytest.mark.anyio

LONG = {"seconds": 30}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, max_backlog=5)


async def busy(client: Client, runtime: Runtime) -> list[str]:
    """Every executor (4) busy with a long job, so new jobs stay pending."""
    running = await submit(client, "sleep", [LONG] * 4)
    with anyio.fail_after(10):
        while True:
            if (await runtime.resources.queries.counts())[JobStatus.IN_PROGRESS] == 4:
                break
            await anyio.sleep(0.05)
    return running


async def test_submissions_past_the_backlog_get_429(client: Client, runtime: Runtime) -> None:
    running = await busy(client, runtime)
    accepted = []
    for _ in range(5):
        accepted += await submit(client, "sleep", [LONG])
    response = await client.post(
        "/api/v1/jobs", json={"task_type": "echo", "data": [{"payload": {}}]}
    )
    body = await assert_error(response, 429, "backlog_full")
    assert body["error"]["details"]["backlog"] == 5
    assert body["error"]["details"]["max_backlog"] == 5
    assert response.headers["Retry-After"] == "30"  # nothing has drained in the last minute
    # reads and cancels still work
    assert (await client.get(f"/api/v1/jobs/{accepted[0]}")).status_code == 200
    assert (await client.post(f"/api/v1/jobs/{accepted[0]}/cancel")).status_code == 200
    # the cancelled job left the backlog: room for one once the count is re-read
    with anyio.fail_after(5):
        while True:
            response = await client.post(
                "/api/v1/jobs", json={"task_type": "echo", "data": [{"payload": {}}]}
            )
            if response.status_code == 202:
                break
            assert response.status_code == 429
            await anyio.sleep(0.1)
    for job_id in running + accepted[1:]:
        await client.post(f"/api/v1/jobs/{job_id}/cancel")


async def test_replays_are_not_submissions(client: Client, runtime: Runtime) -> None:
    dead = await submit(client, "fail", [{}])
    assert (await runtime.wait(dead[0], timeout=10)).status.value == "failed"
    running = await busy(client, runtime)
    for _ in range(5):
        await submit(client, "sleep", [LONG])
    await assert_error(
        await client.post("/api/v1/jobs", json={"task_type": "echo", "data": [{"payload": {}}]}),
        429,
        "backlog_full",
    )
    replay = await client.post(f"/api/v1/jobs/action/{dead[0]}/retry")
    assert replay.status_code == 200
    for job_id in running:
        await client.post(f"/api/v1/jobs/{job_id}/cancel")


async def test_no_limit_without_the_setting(runtime: Runtime, settings: Settings) -> None:
    client = create_app(runtime, dataclasses.replace(settings, max_backlog=None)).test_client()
    ids = await submit(client, "echo", [{}] * 20)
    assert len(ids) == 20
