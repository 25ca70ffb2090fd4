"""Over REST: a value PostgreSQL refuses is a 422 naming the field, and never fails another
client's submission; a draining server refuses new work but keeps answering."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from actors.runtime import Runtime
from tests.web.helpers import Client, assert_error, get_job, submit

pytestmark = pytest.mark.anyio

RAW = {"Content-Type": "application/json"}


async def post_raw(client: Client, body: bytes) -> Any:
    return await client.post("/api/v1/jobs", data=body, headers=RAW)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"task_type":"echo","data":[{"payload":{"s":"a\\u0000b"}}]}', "data[0].payload.s"),
        (b'{"task_type":"echo","data":[{"payload":{"k\\u0000":1}}]}', "data[0].payload['k\\x00']"),
        (
            b'{"task_type":"echo","data":[{"payload":{}},{"payload":{"a":[1,{"b":"\\u0000"}]}}]}',
            "data[1].payload.a[1].b",
        ),
        (b'{"task_type":"echo","data":[{"payload":{"s":"\\ud800"}}]}', "data[0].payload.s"),
        (b'{"task_type":"echo","data":[{"payload":{"s":"x\\udfffy"}}]}', "data[0].payload.s"),
    ],
)
async def test_a_value_postgresql_refuses_is_a_422_naming_the_field(
    client: Client, body: bytes, field: str
) -> None:
    response = await post_raw(client, body)
    found = await assert_error(response, 422, "validation_error", path="/api/v1/jobs")
    fields = {f["field"]: f["message"] for f in found["error"]["details"]["fields"]}
    assert field in fields, fields
    assert "Retry-After" not in response.headers


async def test_not_json_numbers_and_huge_integers_are_400_invalid_json(client: Client) -> None:
    for number in (b"NaN", b"Infinity", b"1" * 5000):
        body = b'{"task_type":"echo","data":[{"payload":{"n":' + number + b"}}]}"
        await assert_error(await post_raw(client, body), 400, "invalid_json")


async def test_one_bad_submission_among_concurrent_valid_ones_fails_only_itself(
    client: Client,
) -> None:
    statuses: list[int] = []
    bad_statuses: list[int] = []

    async def good(i: int) -> None:
        body = {"task_type": "echo", "data": [{"payload": {"i": i}}]}
        statuses.append((await client.post("/api/v1/jobs", json=body)).status_code)

    async def bad() -> None:
        body = b'{"task_type":"echo","data":[{"payload":{"s":"a\\u0000b"}}]}'
        bad_statuses.append((await post_raw(client, body)).status_code)

    with anyio.fail_after(30):
        for _ in range(5):
            async with anyio.create_task_group() as tg:
                for i in range(25):
                    tg.start_soon(good, i)
                tg.start_soon(bad)
    assert statuses == [202] * 125
    assert bad_statuses == [422] * 5


async def test_while_draining_submissions_get_503_health_503_and_reads_go_on(
    client: Client, runtime: Runtime
) -> None:
    (job_id,) = await submit(client, "echo", [{"n": 1}])
    await runtime.tree.ingest.stop()  # what the first SIGTERM does first
    response = await client.post(
        "/api/v1/jobs", json={"task_type": "echo", "data": [{"payload": {}}]}
    )
    await assert_error(response, 503, "shutting_down")
    assert response.headers["Retry-After"] == "5"
    health = await client.get("/api/v1/health")
    await assert_error(health, 503, "draining")
    assert health.headers["Retry-After"] == "5"
    assert (await get_job(client, job_id))["id"] == job_id
    assert (await client.get("/api/v1/jobs")).status_code == 200


async def test_health_is_degraded_while_an_actor_is_stuck_retrying(
    client: Client, runtime: Runtime
) -> None:
    from actors.persist import persist
    from taskflow.errors import StoreError

    async def outage() -> None:
        raise StoreError("database down")

    async with anyio.create_task_group() as tg:
        # A call through the tree's register that keeps failing, as an actor's would.
        tg.start_soon(lambda: persist("settle", outage, retrying=runtime.tree.retrying, base=0.01))
        with anyio.fail_after(5):
            while not runtime.retrying():  # noqa: ASYNC110 - no event to wait on
                await anyio.sleep(0.01)
        response = await client.get("/api/v1/health")
        assert response.status_code == 200
        body = json.loads(await response.get_data())
        assert body["status"] == "degraded"
        assert "database down" in body["retrying"]["settle"]
        tg.cancel_scope.cancel()
    body = json.loads(await (await client.get("/api/v1/health")).get_data())
    assert body["status"] == "ok" and body["retrying"] == {}


@pytest.mark.parametrize(
    "query",
    ["task_type=a%00b", "queue_name=%00", "taskType=%00x"],
    ids=["nul", "nul-only", "camel"],
)
async def test_a_filter_postgresql_cannot_compare_is_a_422_not_a_store_error(
    client: Client, query: str
) -> None:
    response = await client.get(f"/api/v1/jobs?{query}")
    assert response.status_code in (400, 422), await response.get_data()
    body = json.loads(await response.get_data())
    assert body["error"]["code"] in ("validation_error", "bad_request"), body


async def test_a_cursor_that_names_no_job_id_is_refused_as_a_cursor(client: Client) -> None:
    import base64

    forged = base64.urlsafe_b64encode(b'[1700000000.0,"not-a-uuid\\u0000"]').decode().rstrip("=")
    response = await client.get(f"/api/v1/jobs?cursor={forged}")
    found = await assert_error(response, 422, "validation_error")
    assert found["error"]["details"]["fields"][0]["field"] == "cursor"
