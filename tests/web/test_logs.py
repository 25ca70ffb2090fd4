"""GET /api/v1/logs/{id}: captured per job and attempt (ctx.log, stdlib logging in async and
sync tasks, lifecycle lines), as text, as JSON lines, by attempt, followed live (SSE), capped."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from werkzeug.datastructures import Headers

from actors.runtime import open_runtime
from actors.tree import TreeConfig
from taskflow.main import local_resources
from taskflow.memory import MemoryJobStore
from tests.web.conftest import make_registry
from tests.web.helpers import Client, assert_error, get_job, submit, terminal, wait_for
from web.app import create_app

pytestmark = pytest.mark.anyio


async def log_of(client: Client, job_id: str, **params: Any) -> tuple[str, Headers]:
    response = await client.get(f"/api/v1/logs/{job_id}", query_string=params)
    assert response.status_code == 200, await response.get_data()
    return await response.get_data(as_text=True), response.headers


async def settled_log(client: Client, job_id: str, last: str) -> str:
    """The job's text log once ``last`` is in it (the shipper writes after the outcome)."""
    await wait_for(client, job_id, terminal)
    text = ""
    for _ in range(200):
        text, _ = await log_of(client, job_id)
        if last in text:
            return text
        await anyio.sleep(0.05)
    raise AssertionError(f"{last!r} never reached the log:\n{text}")


@pytest.fixture(autouse=True)
def info_logging() -> None:
    logging.getLogger("myapp").setLevel(logging.INFO)


async def test_text_log_has_task_stdlib_and_lifecycle_lines(client: Client) -> None:
    (job_id,) = await submit(client, "chatty", [{"path": "dog.png"}])
    text = await settled_log(client, job_id, "completed in")
    lines = text.splitlines()
    assert "[attempt 1] attempt 1 started" in lines[0] and "worker=" in lines[0]
    assert any(
        "INFO    [attempt 1] resizing" in ln and "path=dog.png" in ln and "width=300" in ln
        for ln in lines
    )
    assert any("WARNING [attempt 1] slow disk: 250 ms (logging:myapp.images)" in ln for ln in lines)
    assert "attempt 1 completed in" in lines[-1]
    assert all(ln[:4].isdigit() and "Z " in ln for ln in lines)  # each starts with its time
    _, headers = await log_of(client, job_id)
    assert headers["X-Log-Source"] == "memory" and headers["X-Log-Complete"] == "true"
    job = await get_job(client, job_id)
    assert job["hasLogs"] is True and job["logUrl"] is None


async def test_a_sync_task_logs_from_its_thread(client: Client) -> None:
    (job_id,) = await submit(client, "chatty_sync", [{}])
    text = await settled_log(client, job_id, "completed in")
    assert "[attempt 1] in a thread" in text
    assert "ERROR   [attempt 1] from stdlib in a thread (logging:myapp.sync)" in text


async def test_jsonl_and_attempts(client: Client) -> None:
    (job_id,) = await submit(client, "chatty", [{"fail_until": 2}])
    await settled_log(client, job_id, "attempt 2 completed")
    raw, headers = await log_of(client, job_id, format="jsonl")
    assert headers["Content-Type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in raw.splitlines()]
    assert {r["attempt"] for r in records} == {1, 2}
    assert all({"ts", "level", "attempt", "message"} <= set(r) for r in records)
    first = [r["message"] for r in records if r["attempt"] == 1]
    assert first[0] == "attempt 1 started"
    assert any(m.startswith("attempt 1 failed: task_error: not yet (attempt 1)") for m in first)
    assert any("Traceback" in m and "ValueError" in m for m in first)  # with its traceback
    assert any(m.startswith("retry scheduled in ") for m in first)
    resizing = next(r for r in records if r["message"] == "resizing")
    assert resizing["fields"] == {"path": "cat.png", "width": 300} and resizing["source"] == "task"
    only_two, _ = await log_of(client, job_id, attempt=2)
    assert "[attempt 2]" in only_two and "[attempt 1]" not in only_two
    none, _ = await log_of(client, job_id, attempt=7)
    assert none == ""


async def test_a_dead_letter_and_its_replay_are_in_the_log(client: Client) -> None:
    (job_id,) = await submit(client, "fail", [{}])
    await settled_log(client, job_id, "dead-lettered")
    response = await client.post(f"/api/v1/jobs/action/{job_id}/retry", json={"reason": "retry it"})
    assert response.status_code == 200
    text = await settled_log(client, job_id, "replayed (replay 1) by api")
    assert "retry it" in text


async def test_unknown_job_is_404_and_a_quiet_job_is_an_empty_200(client: Client) -> None:
    await assert_error(client.get(f"/api/v1/logs/{uuid.uuid4()}"), 404, "job_not_found")
    await assert_error(client.get("/api/v1/logs/nope"), 422, "invalid_id")
    (later,) = await submit(client, "echo", [{}], delay_seconds=3600)
    text, _ = await log_of(client, later)
    assert text == ""
    assert (await get_job(client, later))["hasLogs"] is False
    for params in ({"format": "xml"}, {"attempt": "x"}, {"attempt": "-1"}, {"follow": "perhaps"}):
        response = client.get(f"/api/v1/logs/{later}", query_string=params)
        await assert_error(response, 422, "validation_error")


async def test_follow_streams_lines_until_the_job_is_terminal(client: Client) -> None:
    (job_id,) = await submit(client, "chatty", [{"ticks": 6, "every": 0.1}])
    response = await client.get(f"/api/v1/logs/{job_id}", query_string={"follow": "true"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    body = await response.get_data(as_text=True)
    events = [block for block in body.split("\n\n") if block.strip()]
    kinds = [block.split("\n", 1)[0] for block in events if block.startswith("event:")]
    assert kinds[-1] == "event: end" and set(kinds[:-1]) == {"event: log"}
    end = json.loads(events[-1].split("data: ", 1)[1])
    assert end["status"] == "completed"
    ticks = [b for b in events if "] tick" in b]
    assert [t.split("i=")[1].split()[0] for t in ticks] == [str(i) for i in range(6)]
    assert "completed in" in events[-2]
    assert end["lines"] == len(events) - 1


@pytest.fixture
async def capped() -> AsyncIterator[Client]:
    store = MemoryJobStore()
    config = TreeConfig(concurrency=2, shutdown_grace=0.5, max_log_bytes=4000)
    async with open_runtime(make_registry(), local_resources(store), config) as rt:
        from taskflow.config import Settings

        yield create_app(rt, Settings()).test_client()


async def test_a_log_is_capped_with_a_truncation_marker(capped: Client) -> None:
    (job_id,) = await submit(capped, "verbose", [{"lines": 200}])
    await wait_for(capped, job_id, terminal)
    text = await settled_log(capped, job_id, "log truncated")
    raw, _ = await log_of(capped, job_id, format="jsonl")
    assert len(raw.encode()) <= 4000 + 400  # the cap, and the one marker line
    last = json.loads(raw.splitlines()[-1])
    assert last["message"].startswith("log truncated") and last["fields"]["max_bytes"] == 4000
    assert "line" in text and "completed in" not in text  # later lines were dropped
