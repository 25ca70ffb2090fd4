"""The read cache: a terminal job's view is served from the cache, and every change that
affects it (a replay, a purge, a retention delete) drops it when the change commits; the
counts behind the metrics are cached too; hits and misses show in the metrics."""

from __future__ import annotations

import dataclasses

import pytest

from actors.runtime import Runtime
from taskflow.config import Settings
from tests.web.helpers import Client, assert_error, submit
from web.app import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def settle_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("web.api.SETTLED_SECONDS", 0.0)  # no 5 s wait for the last log lines


async def finished(client: Client, runtime: Runtime, task: str) -> str:
    (job_id,) = await submit(client, task, [{}])
    await runtime.wait(job_id, timeout=10)
    return job_id


async def read(client: Client, job_id: str) -> tuple[str, str]:
    response = await client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, await response.get_data()
    return (await response.get_json())["status"], response.headers["X-Cache"]


async def test_a_terminal_job_is_served_from_the_cache(client: Client, runtime: Runtime) -> None:
    job_id = await finished(client, runtime, "echo")
    before = (await (await client.get("/api/v1/metrics")).get_json())["cache"]
    assert await read(client, job_id) == ("completed", "miss")
    assert await read(client, job_id) == ("completed", "hit")
    assert await read(client, job_id) == ("completed", "hit")
    after = (await (await client.get("/api/v1/metrics")).get_json())["cache"]
    assert after["backend"] == "memory"
    assert after["hits"] - before["hits"] >= 2  # (the counts behind the metrics count too)
    assert after["misses"] > before["misses"]


async def test_a_running_job_is_never_cached(client: Client, runtime: Runtime) -> None:
    (job_id,) = await submit(client, "sleep", [{"seconds": 5}])
    for _ in range(3):
        status, cached = await read(client, job_id)
        assert cached == "miss" and status in ("pending", "in_progress")
    await client.post(f"/api/v1/jobs/{job_id}/cancel")


async def test_a_replay_drops_the_cached_dead_letter(client: Client, runtime: Runtime) -> None:
    job_id = await finished(client, runtime, "fail")
    assert await read(client, job_id) == ("failed", "miss")
    assert await read(client, job_id) == ("failed", "hit")
    assert (await client.post(f"/api/v1/jobs/action/{job_id}/retry")).status_code == 200
    response = await client.get(f"/api/v1/jobs/{job_id}")  # read-your-writes
    assert response.headers["X-Cache"] == "miss"
    assert len((await response.get_json())["replays"]) == 1


async def test_a_bulk_replay_drops_every_cached_one(client: Client, runtime: Runtime) -> None:
    ids = [await finished(client, runtime, "fail") for _ in range(3)]
    for job_id in ids:
        await read(client, job_id)
        assert (await read(client, job_id))[1] == "hit"
    response = await client.post("/api/v1/jobs/action/retry?task_type=fail&limit=2")
    assert (await response.get_json())["replayed"] == 2
    response = await client.post("/api/v1/jobs/action/retry?task_type=fail")
    assert (await response.get_json())["replayed"] == 1
    for job_id in ids:
        response = await client.get(f"/api/v1/jobs/{job_id}")
        assert response.headers["X-Cache"] == "miss"
        assert len((await response.get_json())["replays"]) == 1  # not the cached view


async def test_a_purge_drops_the_cached_view(client: Client, runtime: Runtime) -> None:
    job_id = await finished(client, runtime, "fail")
    await read(client, job_id)
    assert (await read(client, job_id))[1] == "hit"
    assert (await client.delete("/api/v1/dlq?all=true")).status_code == 200
    await assert_error(await client.get(f"/api/v1/jobs/{job_id}"), 404, "job_not_found")


async def test_retention_drops_the_cached_view(client: Client, runtime: Runtime) -> None:
    job_id = await finished(client, runtime, "echo")
    await read(client, job_id)
    assert (await read(client, job_id))[1] == "hit"
    runtime.tree.reaper.retention_completed = 0.0
    response = await client.post("/api/v1/cleanup")
    assert (await response.get_json())["deleted"] >= 1
    await assert_error(await client.get(f"/api/v1/jobs/{job_id}"), 404, "job_not_found")


async def test_no_cache_with_a_zero_ttl(runtime: Runtime, settings: Settings) -> None:
    client = create_app(runtime, dataclasses.replace(settings, cache_ttl=0)).test_client()
    job_id = await finished(client, runtime, "echo")
    assert await read(client, job_id) == ("completed", "miss")
    assert await read(client, job_id) == ("completed", "miss")


async def test_a_just_finished_job_is_not_cached_yet(
    client: Client, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("web.api.SETTLED_SECONDS", 5.0)  # its last log lines may still come
    job_id = await finished(client, runtime, "echo")
    assert await read(client, job_id) == ("completed", "miss")
    assert await read(client, job_id) == ("completed", "miss")


async def test_prometheus_counts_hits_and_misses(client: Client, runtime: Runtime) -> None:
    from tests.web.test_prometheus import scrape, value

    job_id = await finished(client, runtime, "echo")
    await read(client, job_id)
    await read(client, job_id)
    samples = await scrape(client)
    assert value(samples, "taskflow_cache_total", backend="memory", result="hit") >= 1
    assert value(samples, "taskflow_cache_total", backend="memory", result="miss") >= 1
    assert value(samples, "taskflow_cache_total", backend="memory", result="put") >= 1
