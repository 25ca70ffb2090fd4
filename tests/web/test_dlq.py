"""Dead letters: GET /api/v1/dlq and the seed's replay paths under /api/v1/jobs/action."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from actors.runtime import Runtime
from taskflow.codec import encode
from taskflow.memory import MemoryTransport
from taskflow.messages import JobMessage
from tests.web.helpers import Client, assert_error, submit, terminal, wait_all, wait_for

pytestmark = pytest.mark.anyio


async def dead_letters(client: Client, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/dlq", query_string=params)
    assert response.status_code == 200, await response.get_data()
    page: dict[str, Any] = await response.get_json()
    return page


async def bury(client: Client, n: int) -> list[str]:
    ids = await submit(client, "fail", [{"i": i} for i in range(n)])
    jobs = await wait_all(client, ids, terminal)
    assert {job["status"] for job in jobs} == {"failed"}
    return ids


async def test_an_empty_dlq_is_200(client: Client) -> None:
    assert await dead_letters(client) == {
        "limit": 10,
        "offset": 0,
        "tasks": [],
        "nextCursor": None,
        "nextOffset": None,
    }


async def test_dead_letters_are_listed_and_paged(client: Client) -> None:
    ids = await bury(client, 3)
    await submit(client, "echo", [{}])  # not a dead letter
    page = await dead_letters(client, limit=2)
    assert len(page["tasks"]) == 2
    assert page["nextOffset"] == 2
    rest = await dead_letters(client, limit=2, offset=2)
    assert rest["nextOffset"] is None
    listed = [t["id"] for t in page["tasks"] + rest["tasks"]]
    assert sorted(listed) == sorted(ids)
    assert all(t["inDlq"] and t["error"]["reason"] for t in page["tasks"])


async def test_a_bad_page_is_422(client: Client) -> None:
    await assert_error(client.get("/api/v1/dlq?limit=0"), 422, "validation_error")


async def test_replay_one_dead_letter(client: Client) -> None:
    (job_id,) = await bury(client, 1)
    path = f"/api/v1/jobs/action/{job_id}/retry"
    response = await client.post(path)
    assert response.status_code == 200, await response.get_data()
    body = await response.get_json()
    assert body["success"] is True
    assert body["taskId"] == job_id
    assert body["job"]["status"] == "pending"
    assert body["job"]["replayCount"] == 1
    assert body["job"]["originalError"]["reason"] == "max_attempts_exceeded"
    # It runs again (and fails again: the task always fails)
    again = await wait_for(client, job_id, lambda j: terminal(j) and j["attempts"] == 2)
    assert again["status"] == "failed"
    assert again["replayCount"] == 1


async def test_replay_one_that_is_not_a_dead_letter_is_409(client: Client) -> None:
    (job_id,) = await submit(client, "echo", [{}])
    await wait_for(client, job_id, terminal)
    path = f"/api/v1/jobs/action/{job_id}/retry"
    body = await assert_error(client.post(path), 409, "not_dead_letter", path=path)
    assert body["error"]["details"] == {"task_id": job_id, "status": "completed"}
    await assert_error(
        client.post(f"/api/v1/jobs/action/{uuid.uuid4()}/retry"), 404, "job_not_found"
    )
    await assert_error(client.post("/api/v1/jobs/action/xyz/retry"), 422, "invalid_id")


async def test_replay_all_when_there_is_nothing_is_200(client: Client) -> None:
    response = await client.post("/api/v1/jobs/action/retry")
    assert response.status_code == 200
    assert await response.get_json() == {"replayed": 0, "matched": 0, "dryRun": False}


async def test_replay_all(client: Client) -> None:
    ids = await bury(client, 3)
    response = await client.post("/api/v1/jobs/action/retry")
    assert response.status_code == 200
    assert await response.get_json() == {"replayed": 3, "matched": 3, "dryRun": False}
    jobs = await wait_all(client, ids, lambda j: j["replayCount"] == 1 and terminal(j))
    assert {job["status"] for job in jobs} == {"failed"}


async def test_replay_all_of_one_task_type(client: Client) -> None:
    await bury(client, 2)
    response = await client.post("/api/v1/jobs/action/retry?task_type=echo")
    assert (await response.get_json())["replayed"] == 0
    response = await client.post("/api/v1/jobs/action/retry?task_type=fail")
    assert (await response.get_json())["replayed"] == 2


async def test_dead_lettered_messages_are_listed_with_their_reasons(
    client: Client, runtime: Runtime
) -> None:
    # Given: two raw messages the dispatcher cannot run (as a raw AMQP client could send)
    transport = runtime.resources.transport
    assert isinstance(transport, MemoryTransport)
    transport.publish_raw("default", b"\xffgarbage")
    transport.publish_raw(
        "default", encode(JobMessage(job_id=str(uuid.uuid4()), task="echo", queue="default"))
    )
    # Then: both are listed, newest first, with why
    for _ in range(100):
        response = await client.get("/api/v1/dlq/messages?limit=1")
        body = await response.get_json()
        if body["messages"] and body["nextOffset"] == 1:
            break
        await anyio.sleep(0.05)
    assert response.status_code == 200
    (newest,) = body["messages"]
    response = await client.get("/api/v1/dlq/messages?offset=1")
    (oldest,) = (await response.get_json())["messages"]
    reasons = {newest["reason"].split(":")[0], oldest["reason"].split(":")[0]}
    assert reasons == {"malformed_message", "unknown_job"}
    assert newest["queueName"] == "default" and newest["id"] > oldest["id"]
