"""POST /api/v1/jobs: batches, options, idempotency, limits and every rejection."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import anyio
import pytest

from actors.runtime import Runtime
from taskflow.config import Settings
from taskflow.ports import JobQuery
from tests.web.helpers import Client, assert_error, bad_fields, get_job, submit, terminal, wait_all

pytestmark = pytest.mark.anyio

URL = "/api/v1/jobs"


async def stored_count(runtime: Runtime) -> int:
    return len(await runtime.list_jobs(JobQuery(limit=10_000)))


# ------------------------------------------------------------------ accepted


async def test_snake_case_batch_is_accepted_one_job_per_item(
    client: Client,
) -> None:
    # Given a batch of three payloads in snake_case
    payloads = [{"n": 1}, {"n": 2}, {"nested": {"list": [1, 2, 3]}}]
    body = {
        "task_type": "echo",
        "queue_name": "default",
        "data": [{"payload": p} for p in payloads],
    }

    # When it is submitted
    response = await client.post(URL, json=body)

    # Then it is accepted with one id per item, in order, and each job runs its own payload
    assert response.status_code == 202
    assert "Idempotent-Replayed" not in response.headers
    result = await response.get_json()
    assert result["numberOfMessages"] == 3
    assert result["status"] == "pending"
    assert result["message"]
    assert len(set(result["taskIds"])) == 3
    jobs = await wait_all(client, result["taskIds"], terminal)
    assert [job["payload"] for job in jobs] == payloads
    assert [job["result"] for job in jobs] == payloads
    assert {job["status"] for job in jobs} == {"completed"}


async def test_camel_case_body_with_every_option(client: Client) -> None:
    body = {
        "taskType": "echo",
        "queueName": "other",
        "data": [{"payload": {"x": 1}}],
        "priority": 7,
        "maxAttempts": 5,
        "timeoutSeconds": 30,
    }
    response = await client.post(URL, json=body)
    assert response.status_code == 202, await response.get_data()
    (job_id,) = (await response.get_json())["taskIds"]
    job = await get_job(client, job_id)
    assert job["taskType"] == "echo"
    assert job["queueName"] == "other"
    assert job["priority"] == 7
    assert job["maxAttempts"] == 5
    (done,) = await wait_all(client, [job_id], terminal)
    assert done["status"] == "completed"  # a job on the second queue runs too


async def test_delayed_jobs_are_scheduled(client: Client) -> None:
    body = {"task_type": "echo", "data": [{"payload": {}}, {"payload": {}}], "delay_seconds": 60}
    response = await client.post(URL, json=body)
    assert response.status_code == 202
    result = await response.get_json()
    assert result["status"] == "scheduled"
    for job_id in result["taskIds"]:
        job = await get_job(client, job_id)
        assert job["status"] == "scheduled"
        run_at = datetime.fromisoformat(job["runAt"])
        created_at = datetime.fromisoformat(job["createdAt"])
        assert 59 <= (run_at - created_at).total_seconds() <= 61


async def test_a_json_subtype_content_type_is_accepted(client: Client) -> None:
    data = json.dumps({"task_type": "echo", "data": [{"payload": {}}]})
    response = await client.post(
        URL, data=data, headers={"Content-Type": "application/vnd.taskflow+json; charset=utf-8"}
    )
    assert response.status_code == 202


# ------------------------------------------------------------------ idempotency


async def test_same_key_and_body_replays_the_original_response(
    client: Client, runtime: Runtime
) -> None:
    body = {"task_type": "echo", "data": [{"payload": {"n": 1}}, {"payload": {"n": 2}}]}
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post(URL, json=body, headers=headers)
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers

    again = await client.post(URL, json=body, headers=headers)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.get_json() == await first.get_json()

    # The same request spelled in camelCase is the same request
    camel = {"taskType": "echo", "data": body["data"]}
    spelled = await client.post(URL, json=camel, headers=headers)
    assert spelled.status_code == 200
    assert await spelled.get_json() == await first.get_json()
    assert await stored_count(runtime) == 2


async def test_same_key_with_another_body_is_a_conflict(client: Client, runtime: Runtime) -> None:
    headers = {"Idempotency-Key": "k-1"}
    await submit(client, "echo", [{"n": 1}], headers=headers)
    response = await client.post(
        URL, json={"task_type": "echo", "data": [{"payload": {"n": 2}}]}, headers=headers
    )
    await assert_error(response, 409, "idempotency_conflict", path=URL)
    assert await stored_count(runtime) == 1


async def test_different_keys_store_different_batches(client: Client, runtime: Runtime) -> None:
    a = await submit(client, "echo", [{"n": 1}], headers={"Idempotency-Key": "a"})
    b = await submit(client, "echo", [{"n": 1}], headers={"Idempotency-Key": "b"})
    assert a != b
    assert await stored_count(runtime) == 2


async def test_fifty_racing_duplicates_store_one_batch(client: Client, runtime: Runtime) -> None:
    # Given 50 identical requests with one key, sent at the same time
    body = {"task_type": "echo", "data": [{"payload": {"i": i}} for i in range(3)]}
    headers = {"Idempotency-Key": "race-1"}
    results: list[tuple[int, Any, str | None]] = []

    async def post() -> None:
        response = await client.post(URL, json=body, headers=headers)
        results.append(
            (
                response.status_code,
                await response.get_json(),
                response.headers.get("Idempotent-Replayed"),
            )
        )

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(post)

    # Then exactly one created the batch, the others replayed it, and all agree on the ids
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 49 + [202], statuses
    assert len({tuple(body["taskIds"]) for _, body, _ in results}) == 1
    assert all(replayed == "true" for status, _, replayed in results if status == 200)
    assert await stored_count(runtime) == 3


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
async def test_a_malformed_idempotency_key_is_rejected(client: Client, key: str) -> None:
    response = await client.post(
        URL,
        json={"task_type": "echo", "data": [{"payload": {}}]},
        headers={"Idempotency-Key": key},
    )
    body = await assert_error(response, 422, "validation_error")
    assert bad_fields(body) == {"Idempotency-Key"}


# ------------------------------------------------------------------ rejected: semantics


async def test_unknown_task_is_422(client: Client, runtime: Runtime) -> None:
    response = await client.post(URL, json={"task_type": "nope", "data": [{"payload": {}}]})
    body = await assert_error(response, 422, "unknown_task", path=URL)
    assert body["error"]["details"] == {"task": "nope"}
    assert await stored_count(runtime) == 0


async def test_unknown_queue_is_422(client: Client, runtime: Runtime) -> None:
    response = await client.post(
        URL, json={"task_type": "echo", "queue_name": "elsewhere", "data": [{"payload": {}}]}
    )
    body = await assert_error(response, 422, "unknown_queue")
    assert body["error"]["details"]["queues"] == ["default", "other"]
    assert await stored_count(runtime) == 0


async def test_empty_data_is_422(client: Client) -> None:
    response = await client.post(URL, json={"task_type": "echo", "data": []})
    body = await assert_error(response, 422, "validation_error")
    assert bad_fields(body) == {"data"}


async def test_every_bad_field_is_listed(client: Client) -> None:
    body = {
        "taskType": "",
        "data": [{"payload": {}}, {"nopayload": 1}, {"payload": [1]}, 7],
        "priority": 10,
        "delaySeconds": -1,
        "maxAttempts": True,
        "timeoutSeconds": 0,
        "colour": "blue",
    }
    response = await client.post(URL, json=body)
    error = await assert_error(response, 422, "validation_error")
    assert bad_fields(error) == {
        "taskType",
        "data[1]",
        "data[1].payload",
        "data[2].payload",
        "data[3]",
        "priority",
        "delaySeconds",
        "maxAttempts",
        "timeoutSeconds",
        "colour",
    }


async def test_a_field_given_in_both_spellings_is_422(client: Client) -> None:
    body = {"task_type": "echo", "taskType": "echo", "data": [{"payload": {}}]}
    error = await assert_error(await client.post(URL, json=body), 422, "validation_error")
    assert bad_fields(error) == {"taskType"}


@pytest.mark.parametrize("document", [[], "text", 3, None])
async def test_a_body_that_is_not_an_object_is_422(client: Client, document: Any) -> None:
    response = await client.post(
        URL, data=json.dumps(document), headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 422, "validation_error")


async def test_too_many_items_is_413(client: Client, settings: Settings) -> None:
    data: list[dict[str, Any]] = [{"payload": {}}] * (settings.max_batch + 1)
    response = await client.post(URL, json={"task_type": "echo", "data": data})
    body = await assert_error(response, 413, "batch_too_large")
    assert body["error"]["details"]["max_batch"] == settings.max_batch


async def test_max_batch_items_is_accepted(client: Client, settings: Settings) -> None:
    ids = await submit(client, "echo", [{}] * settings.max_batch)
    assert len(ids) == settings.max_batch


async def test_a_payload_nested_too_deeply_is_422(client: Client) -> None:
    payload: dict[str, Any] = {}
    for _ in range(100):
        payload = {"a": payload}
    response = await client.post(URL, json={"task_type": "echo", "data": [{"payload": payload}]})
    body = await assert_error(response, 422, "validation_error")
    assert bad_fields(body) == {"data[0].payload"}


# ------------------------------------------------------------------ rejected: transport


async def test_a_body_over_the_limit_is_413(
    client: Client, settings: Settings, runtime: Runtime
) -> None:
    blob = "x" * (settings.max_body_bytes + 1)
    response = await client.post(
        URL, json={"task_type": "echo", "data": [{"payload": {"b": blob}}]}
    )
    await assert_error(response, 413, "body_too_large", path=URL)
    assert await stored_count(runtime) == 0


async def test_a_huge_body_without_content_length_is_cut_off_while_read(
    client: Client, settings: Settings
) -> None:
    # Given a client that streams a body and never announces its length
    chunk = b" " * 16_384
    async with client.request(
        URL, method="POST", headers={"Content-Type": "application/json"}
    ) as connection:
        # When it sends more than the limit
        for _ in range(settings.max_body_bytes // len(chunk) + 2):
            await connection.send(chunk)
        await connection.send_complete()
    # Then the request is refused with 413, not buffered whole
    response = await connection.as_response()
    await assert_error(response, 413, "body_too_large")


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", '{"task_type": "echo", "data": [{"payload": {}}]}'),
        ("application/x-www-form-urlencoded", "task_type=echo"),
        (None, '{"task_type": "echo", "data": [{"payload": {}}]}'),
    ],
)
async def test_a_body_that_is_not_json_is_415(
    client: Client, content_type: str | None, data: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(URL, data=data.encode(), headers=headers)
    await assert_error(response, 415, "unsupported_media_type", path=URL)


@pytest.mark.parametrize(
    "data",
    [
        b'{"task_type": "echo", "data": [',
        b"",
        b"{'task_type': 'echo'}",
        b'{"task_type": "echo", "data": [{"payload": {"n": NaN}}]}',
    ],
    ids=["truncated", "empty", "single-quotes", "nan"],
)
async def test_invalid_json_is_400(client: Client, data: bytes) -> None:
    response = await client.post(URL, data=data, headers={"Content-Type": "application/json"})
    await assert_error(response, 400, "invalid_json", path=URL)


async def test_invalid_utf8_is_400(client: Client) -> None:
    data = b'{"task_type": "echo", "data": [{"payload": {"s": "\xff\xfe"}}]}'
    response = await client.post(URL, data=data, headers={"Content-Type": "application/json"})
    await assert_error(response, 400, "invalid_json")


async def test_json_nested_ten_thousand_levels_is_a_client_error(
    client: Client,
) -> None:
    depth = 10_000
    data = b'{"task_type": "echo", "data": [{"payload": {"a": ' + b"[" * depth
    data += b"]" * depth + b"}}]}"
    response = await client.post(URL, data=data, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500
    await assert_error(response, 400, "invalid_json")
