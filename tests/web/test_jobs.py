"""GET /api/v1/jobs, GET /api/v1/jobs/{id}, POST /api/v1/jobs/{id}/cancel."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from tests.web.helpers import (
    Client,
    assert_error,
    bad_fields,
    get_job,
    submit,
    terminal,
    wait_all,
    wait_for,
)

pytestmark = pytest.mark.anyio

JOB_FIELDS = {
    "id",
    "taskId",
    "taskType",
    "queueName",
    "payload",
    "status",
    "priority",
    "attempts",
    "maxAttempts",
    "progress",
    "progressMessage",
    "result",
    "error",
    "inDlq",
    "cancelRequested",
    "replayCount",
    "originalError",
    "originalPayload",
    "attemptHistory",
    "replays",
    "hasLogs",
    "logUrl",
    "runAt",
    "createdAt",
    "startedAt",
    "finishedAt",
    "updatedAt",
}


def utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None and moment.utcoffset() == UTC.utcoffset(None)
    return moment


async def list_page(client: Client, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/jobs", query_string=params)
    assert response.status_code == 200, await response.get_data()
    page: dict[str, Any] = await response.get_json()
    return page


# ------------------------------------------------------------------ one job


async def test_a_completed_job_in_camel_case(client: Client) -> None:
    (job_id,) = await submit(client, "echo", [{"k": "v"}], priority=3)
    job = await wait_for(client, job_id, terminal)
    assert set(job) == JOB_FIELDS
    assert job["id"] == job["taskId"] == job_id
    assert job["taskType"] == "echo"
    assert job["queueName"] == "default"
    assert job["status"] == "completed"
    assert job["payload"] == job["result"] == {"k": "v"}
    assert job["priority"] == 3
    assert job["attempts"] == 1
    assert job["progress"] == 100.0
    assert job["error"] is None and job["originalError"] is None
    assert job["inDlq"] is False and job["cancelRequested"] is False
    assert job["runAt"] is None
    created, started, finished = (
        utc(job["createdAt"]),
        utc(job["startedAt"]),
        utc(job["finishedAt"]),
    )
    assert created <= started <= finished <= utc(job["updatedAt"])


async def test_a_failed_job_carries_its_error(client: Client) -> None:
    (job_id,) = await submit(client, "fail", [{}])
    job = await wait_for(client, job_id, terminal)
    assert job["status"] == "failed"
    assert job["inDlq"] is True
    assert job["attempts"] == job["maxAttempts"] == 2
    assert set(job["error"]) == {"code", "message", "type", "reason", "traceback"}
    assert "RuntimeError: this task always fails" in job["error"]["traceback"]
    assert job["error"]["reason"] == "max_attempts_exceeded"
    assert "always fails" in job["error"]["message"]


async def test_progress_is_visible_while_running(client: Client) -> None:
    (job_id,) = await submit(client, "sleep", [{"seconds": 1.0}])
    job = await wait_for(client, job_id, lambda j: j["progress"] > 0)
    assert job["status"] == "in_progress"
    assert job["progressMessage"].startswith("step ")
    await client.post(f"/api/v1/jobs/{job_id}/cancel")


async def test_an_unknown_id_is_404(client: Client) -> None:
    missing = str(uuid.uuid4())
    path = f"/api/v1/jobs/{missing}"
    await assert_error(client.get(path), 404, "job_not_found", path=path)


@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "x" * 100, "action"])
async def test_a_malformed_id_is_422(client: Client, bad: str) -> None:
    await assert_error(client.get(f"/api/v1/jobs/{bad}"), 422, "invalid_id")


async def test_an_upper_case_id_finds_the_job(client: Client) -> None:
    (job_id,) = await submit(client, "echo", [{}])
    job = await get_job(client, job_id.upper())
    assert job["id"] == job_id


# ------------------------------------------------------------------ listing


async def test_an_empty_list_is_200(client: Client) -> None:
    page = await list_page(client)
    assert page == {"limit": 10, "offset": 0, "tasks": [], "nextCursor": None}
    page = await list_page(client, status="failed", offset=40)
    assert page["tasks"] == []


async def test_filters_by_status_task_and_queue(client: Client) -> None:
    echo_ids = await submit(client, "echo", [{"n": i} for i in range(3)])
    other_ids = await submit(client, "echo", [{"n": 9}], queue_name="other")
    fail_ids = await submit(client, "fail", [{}])
    await wait_all(client, echo_ids + other_ids + fail_ids, terminal)

    completed = await list_page(client, status="completed", limit=100)
    assert {t["id"] for t in completed["tasks"]} == set(echo_ids + other_ids)
    failed = await list_page(client, status="failed")
    assert [t["id"] for t in failed["tasks"]] == fail_ids
    by_task = await list_page(client, task_type="fail")
    assert [t["id"] for t in by_task["tasks"]] == fail_ids
    by_queue = await list_page(client, queueName="other")
    assert [t["id"] for t in by_queue["tasks"]] == other_ids
    nothing = await list_page(client, task_type="never-registered")
    assert nothing["tasks"] == []


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"status": "done"}, {"status"}),
        ({"limit": 0}, {"limit"}),
        ({"limit": 501}, {"limit"}),
        ({"limit": "ten"}, {"limit"}),
        ({"offset": -1}, {"offset"}),
        ({"cursor": "not-a-cursor"}, {"cursor"}),
        ({"limit": 0, "status": "nope", "offset": "x"}, {"limit", "status", "offset"}),
    ],
)
async def test_a_bad_query_is_422_naming_the_fields(
    client: Client, params: dict[str, Any], fields: set[str]
) -> None:
    response = await client.get("/api/v1/jobs", query_string=params)
    body = await assert_error(response, 422, "validation_error", path="/api/v1/jobs")
    assert bad_fields(body) == fields


async def test_limit_500_is_allowed(client: Client) -> None:
    page = await list_page(client, limit=500)
    assert page["limit"] == 500


async def test_cursor_pages_have_no_duplicates_and_no_gaps(client: Client) -> None:
    # Given 23 jobs from several batches (a batch shares one created_at)
    ids: list[str] = []
    for size in (5, 1, 9, 8):
        ids += await submit(client, "echo", [{"i": i} for i in range(size)])

    # When paging through them 5 at a time, while new jobs keep arriving
    seen: list[dict[str, Any]] = []
    page = await list_page(client, limit=5)
    while True:
        seen += page["tasks"]
        assert len(page["tasks"]) <= 5
        if page["nextCursor"] is None:
            break
        await submit(client, "echo", [{"late": True}])  # newer: must not appear below
        page = await list_page(client, limit=5, cursor=page["nextCursor"])

    # Then every original job is seen exactly once, newest first
    seen_ids = [t["id"] for t in seen]
    assert len(seen_ids) == len(set(seen_ids))
    assert set(seen_ids) == set(ids)
    keys = [(utc(t["createdAt"]), t["id"]) for t in seen]
    assert keys == sorted(keys, reverse=True)


async def test_offset_paging(client: Client) -> None:
    ids = await submit(client, "echo", [{"i": i} for i in range(7)])
    first = await list_page(client, limit=4)
    second = await list_page(client, limit=4, offset=4)
    assert first["nextCursor"] is not None
    assert second["nextCursor"] is None
    assert second["offset"] == 4
    got = [t["id"] for t in first["tasks"] + second["tasks"]]
    assert sorted(got) == sorted(ids)


async def test_the_last_full_page_has_no_next_cursor(client: Client) -> None:
    await submit(client, "echo", [{}] * 4)
    page = await list_page(client, limit=4)
    assert len(page["tasks"]) == 4
    assert page["nextCursor"] is None


# ------------------------------------------------------------------ cancel


async def test_cancel_a_scheduled_job(client: Client) -> None:
    (job_id,) = await submit(client, "echo", [{}], delay_seconds=60)
    response = await client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    job = await response.get_json()
    assert set(job) == JOB_FIELDS
    assert job["status"] == "cancelled"
    assert (await get_job(client, job_id))["status"] == "cancelled"


async def test_cancel_a_running_job(client: Client) -> None:
    (job_id,) = await submit(client, "sleep", [{"seconds": 30}])
    await wait_for(client, job_id, lambda j: j["status"] == "in_progress")
    response = await client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    job = await response.get_json()
    assert job["status"] == "in_progress"
    assert job["cancelRequested"] is True
    done = await wait_for(client, job_id, terminal, timeout=5)
    assert done["status"] == "cancelled"


async def test_cancel_a_finished_job_is_409(client: Client) -> None:
    (job_id,) = await submit(client, "echo", [{}])
    await wait_for(client, job_id, terminal)
    path = f"/api/v1/jobs/{job_id}/cancel"
    await assert_error(client.post(path), 409, "invalid_transition", path=path)


async def test_cancel_unknown_and_malformed_ids(client: Client) -> None:
    await assert_error(client.post(f"/api/v1/jobs/{uuid.uuid4()}/cancel"), 404, "job_not_found")
    await assert_error(client.post("/api/v1/jobs/nope/cancel"), 422, "invalid_id")


# ------------------------------------------------------------------ long-poll: ?wait=S


async def test_wait_holds_the_answer_until_the_job_is_terminal(client: Client) -> None:
    (job_id,) = await submit(client, "sleep", [{"seconds": 0.3}])
    with anyio.fail_after(10):
        response = await client.get(f"/api/v1/jobs/{job_id}", query_string={"wait": "5"})
    assert response.status_code == 200
    job = await response.get_json()
    assert job["status"] == "completed", job
    assert job["id"] == job_id


async def test_wait_answers_the_job_as_it_is_when_the_time_is_up(client: Client) -> None:
    (job_id,) = await submit(client, "sleep", [{"seconds": 5.0}])
    started = anyio.current_time()
    response = await client.get(f"/api/v1/jobs/{job_id}", query_string={"wait": "0.4"})
    elapsed = anyio.current_time() - started
    assert response.status_code == 200
    job = await response.get_json()
    assert job["status"] in {"pending", "in_progress"}, job
    assert 0.3 <= elapsed < 4.0, elapsed
    await client.post(f"/api/v1/jobs/{job_id}/cancel")


async def test_wait_on_a_terminal_job_answers_at_once(client: Client) -> None:
    (job_id,) = await submit(client, "echo", [{}])
    await wait_for(client, job_id, terminal)
    started = anyio.current_time()
    response = await client.get(f"/api/v1/jobs/{job_id}", query_string={"wait": "30"})
    assert response.status_code == 200
    assert anyio.current_time() - started < 2.0


@pytest.mark.parametrize("bad", ["0", "-1", "61", "nan", "inf", "soon", ""])
async def test_a_bad_wait_is_a_422(client: Client, bad: str) -> None:
    (job_id,) = await submit(client, "echo", [{}])
    body = await assert_error(
        client.get(f"/api/v1/jobs/{job_id}", query_string={"wait": bad}), 422, "validation_error"
    )
    assert bad_fields(body) == {"wait"}


async def test_wait_on_an_unknown_job_is_a_404_at_once(client: Client) -> None:
    started = anyio.current_time()
    await assert_error(
        client.get(f"/api/v1/jobs/{uuid.uuid4()}", query_string={"wait": "30"}),
        404,
        "job_not_found",
    )
    assert anyio.current_time() - started < 2.0
