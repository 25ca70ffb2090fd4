"""The dead-letter queue as a product: filters, cursor paging, one dead letter with its
attempt history, replay with a corrected payload, replay many by filter, purge."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.web.helpers import Client, assert_error, bad_fields, submit, terminal, wait_all, wait_for

pytestmark = pytest.mark.anyio


async def listing(client: Client, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/dlq", query_string=params)
    assert response.status_code == 200, await response.get_data()
    page: dict[str, Any] = await response.get_json()
    return page


async def bury(client: Client, task: str, payloads: list[dict[str, Any]], **opts: Any) -> list[str]:
    ids = await submit(client, task, payloads, **opts)
    jobs = await wait_all(client, ids, terminal)
    assert {job["status"] for job in jobs} == {"failed"}
    return ids


async def test_one_dead_letter_shows_every_attempt_with_its_traceback(client: Client) -> None:
    (job_id,) = await bury(client, "fail", [{}])  # max_attempts 2
    response = await client.get(f"/api/v1/dlq/{job_id}")
    assert response.status_code == 200
    job = await response.get_json()
    first, second = job["attemptHistory"]
    assert [first["number"], second["number"]] == [1, 2]
    assert [first["outcome"], second["outcome"]] == ["retried", "dead_lettered"]
    for attempt in (first, second):
        assert attempt["worker"] and attempt["series"] == 0
        assert attempt["durationSeconds"] >= 0
        assert attempt["startedAt"] <= attempt["finishedAt"]
        error = attempt["error"]
        assert error["code"] == "task_error" and error["type"] == "builtins.RuntimeError"
        assert "this task always fails" in error["message"]
        assert "Traceback" in error["traceback"] and "RuntimeError" in error["traceback"]
    assert "traceback" in job["error"]
    # The job resource has the history too; listings leave tracebacks out
    assert len((await wait_for(client, job_id, terminal))["attemptHistory"]) == 2
    (listed,) = (await listing(client))["tasks"]
    assert "traceback" not in listed["error"]
    assert all("traceback" not in a["error"] for a in listed["attemptHistory"])


async def test_one_dead_letter_that_is_not_one_is_404(client: Client) -> None:
    (job_id,) = await submit(client, "echo", [{}])
    await wait_for(client, job_id, terminal)
    await assert_error(client.get(f"/api/v1/dlq/{job_id}"), 404, "not_dead_letter")
    await assert_error(client.get(f"/api/v1/dlq/{uuid.uuid4()}"), 404, "job_not_found")
    await assert_error(client.get("/api/v1/dlq/nope"), 422, "invalid_id")


async def test_replay_with_a_corrected_payload(client: Client) -> None:
    (job_id,) = await bury(client, "picky", [{"size": -1}])
    path = f"/api/v1/jobs/action/{job_id}/retry"
    response = await client.post(path, json={"payload": {"size": 2}, "reason": "size fixed"})
    assert response.status_code == 200, await response.get_data()
    replayed = (await response.get_json())["job"]
    assert replayed["payload"] == {"size": 2}
    assert replayed["originalPayload"] == {"size": -1}
    (record,) = replayed["replays"]
    assert record["reason"] == "size fixed" and record["payloadChanged"] is True
    assert record["by"].startswith("api ")
    done = await wait_for(client, job_id, terminal)
    assert done["status"] == "completed" and done["result"] == {"size": 2}
    assert [a["outcome"] for a in done["attemptHistory"]] == ["dead_lettered", "completed"]
    assert [a["series"] for a in done["attemptHistory"]] == [0, 1]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"payload": [1]}, {"payload"}),
        ({"payload": {"a": "\u0000"}}, {"payload.a"}),
        ({"reason": 5}, {"reason"}),
        ({"reason": "x" * 1001}, {"reason"}),
        ({"payload": {}, "color": "red"}, {"color"}),
    ],
)
async def test_a_bad_replay_body_is_422_and_changes_nothing(
    client: Client, body: dict[str, Any], fields: set[str]
) -> None:
    (job_id,) = await bury(client, "picky", [{"size": 0}])
    response = client.post(f"/api/v1/jobs/action/{job_id}/retry", json=body)
    assert bad_fields(await assert_error(response, 422, "validation_error")) == fields
    job = await wait_for(client, job_id, terminal)
    assert job["status"] == "failed" and job["replayCount"] == 0


async def test_a_replay_body_that_is_not_json_is_refused(client: Client) -> None:
    (job_id,) = await bury(client, "picky", [{"size": 0}])
    path = f"/api/v1/jobs/action/{job_id}/retry"
    await assert_error(
        client.post(path, data="{", headers={"Content-Type": "application/json"}),
        400,
        "invalid_json",
    )
    await assert_error(
        client.post(path, data="x=1", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )


async def test_filters_combine_and_cursor_pages(client: Client) -> None:
    small = await bury(client, "picky", [{"size": -i, "tag": f"t{i}"} for i in range(3)])
    other = await bury(client, "picky", [{"size": 0}], queue_name="other")
    failing = await bury(client, "fail", [{}])
    assert {t["id"] for t in (await listing(client, task_type="picky"))["tasks"]} == {
        *small,
        *other,
    }
    assert [t["id"] for t in (await listing(client, queueName="other"))["tasks"]] == other
    assert [t["id"] for t in (await listing(client, q="ALWAYS fails"))["tasks"]] == failing
    assert [t["id"] for t in (await listing(client, q="t2"))["tasks"]] == [small[2]]
    assert [t["id"] for t in (await listing(client, error_code="timeout"))["tasks"]] == []
    assert (await listing(client, task_type="picky", q="always"))["tasks"] == []
    future = "2999-01-01T00:00:00Z"
    assert (await listing(client, since=future))["tasks"] == []
    assert len((await listing(client, until=future, limit=500))["tasks"]) == 5
    # cursor paging, newest first, no gaps
    seen, cursor = [], None
    while True:
        page = await listing(client, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([*small, *other, *failing]) and len(seen) == 5
    times = [t["finishedAt"] for t in (await listing(client, limit=5))["tasks"]]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "nan"}, "until"),
        ({"since": "2030-01-01", "until": "2020-01-01"}, "until"),
        ({"q": "x" * 201}, "q"),
        ({"cursor": "garbage"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"task_type": "a", "taskType": "b"}, "taskType"),
    ],
)
async def test_a_bad_filter_is_422(client: Client, params: dict[str, str], field: str) -> None:
    body = await assert_error(
        client.get("/api/v1/dlq", query_string=params), 422, "validation_error"
    )
    assert field in bad_fields(body)


async def test_replay_many_by_filter_and_dry_run(client: Client) -> None:
    picky = await bury(client, "picky", [{"size": 0}, {"size": -5}])
    await bury(client, "fail", [{}])
    response = await client.post("/api/v1/jobs/action/retry?task_type=picky&dry_run=true")
    assert await response.get_json() == {"replayed": 0, "matched": 2, "dryRun": True}
    assert len((await listing(client))["tasks"]) == 3  # nothing moved
    response = await client.post(
        "/api/v1/jobs/action/retry?task_type=picky", json={"reason": "deploy 42"}
    )
    assert await response.get_json() == {"replayed": 2, "matched": 2, "dryRun": False}
    jobs = await wait_all(client, picky, lambda j: terminal(j) and j["replayCount"] == 1)
    assert all(j["replays"][0]["reason"] == "deploy 42" for j in jobs)
    # they died again: each was replayed once, not twice
    assert all(len(j["attemptHistory"]) == 2 for j in jobs)
    response = await client.post("/api/v1/jobs/action/retry", json={"payload": {"size": 1}})
    assert "payload" in bad_fields(await assert_error(response, 422, "validation_error"))
    response = await client.post("/api/v1/jobs/action/retry?dry_run=maybe")
    assert "dry_run" in bad_fields(await assert_error(response, 422, "validation_error"))


async def test_purge_needs_a_filter_or_all(client: Client) -> None:
    picky = await bury(client, "picky", [{"size": 0}])
    failing = await bury(client, "fail", [{}, {}])
    body = await assert_error(client.delete("/api/v1/dlq"), 422, "confirmation_required")
    assert "task_type" in body["error"]["details"]["filters"]
    response = await client.delete("/api/v1/dlq?task_type=fail&dry_run=true")
    assert await response.get_json() == {"purged": 0, "matched": 2, "dryRun": True}
    response = await client.delete("/api/v1/dlq?task_type=fail")
    assert await response.get_json() == {"purged": 2, "matched": 2, "dryRun": False}
    for job_id in failing:
        await assert_error(client.get(f"/api/v1/jobs/{job_id}"), 404, "job_not_found")
    assert [t["id"] for t in (await listing(client))["tasks"]] == picky
    response = await client.delete("/api/v1/dlq?task_type=nothing")
    assert await response.get_json() == {"purged": 0, "matched": 0, "dryRun": False}
    response = await client.delete("/api/v1/dlq?all=true")
    assert (await response.get_json())["purged"] == 1
    assert (await listing(client))["tasks"] == []
