"""PostgresJobStore against a real server: cancellation, timeouts, migrations, query plans,
and the whole tree running on it."""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import anyio
import psycopg
import pytest

from actors.runtime import open_runtime
from actors.tree import TreeConfig
from taskflow import JobContext, JobStatus, RetryPolicy, TaskRegistry
from taskflow.clock import WallClock
from taskflow.errors import StoreError
from taskflow.jobs import Job
from taskflow.memory import MemoryEventBus, MemoryLogStore, MemoryTransport
from taskflow.postgres import PostgresJobStore
from taskflow.postgres.migrate import applied, migrate, rollback
from taskflow.resources import Resources
from tests.pg import admin, with_database

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async API is asyncio-only


def job(now: float, **fields: Any) -> Job:
    return Job(
        **({"id": str(uuid.uuid4()), "task": "echo", "created_at": now, "updated_at": now} | fields)
    )


async def test_a_cancelled_caller_leaves_the_pool_healthy(pg_store: PostgresJobStore) -> None:
    now = time.time()
    for _ in range(20):
        with anyio.move_on_after(0.0005):
            await pg_store.insert([job(now) for _ in range(500)], now=now)
    # The inserts were shielded: each either committed whole or never started.
    counts = await pg_store.counts()
    assert counts[JobStatus.PENDING] % 500 == 0
    stats = pg_store.pool.get_stats()
    assert stats.get("connections_lost", 0) == 0
    assert stats.get("returns_bad", 0) == 0
    await pg_store.check()


async def test_the_server_side_statement_timeout_keeps_the_connection(
    pg_store: PostgresJobStore,
) -> None:
    started = time.monotonic()

    async def sleep_too_long() -> None:
        async with pg_store._tx() as conn:
            await conn.execute("SET LOCAL statement_timeout = 100")
            await conn.execute("SELECT pg_sleep(5)")

    with pytest.raises(StoreError, match="QueryCanceled"):
        await sleep_too_long()
    assert time.monotonic() - started < 2.0
    await pg_store.check()
    assert pg_store.pool.get_stats().get("connections_lost", 0) == 0


async def test_an_unreachable_database_is_a_store_error() -> None:
    from taskflow.postgres import open_store

    with pytest.raises(StoreError, match="cannot connect"):
        async with open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"):
            pass


def test_concurrent_migrations_apply_once(pg_server_url: str) -> None:
    name = f"tf_mig_{uuid.uuid4().hex[:10]}"
    admin(pg_server_url, f'CREATE DATABASE "{name}"')
    url = with_database(pg_server_url, name)
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: migrate(url), range(4)))
        every = ["0001.jobs", "0002.history", "0003.api_keys"]
        assert sorted(len(r) for r in results) == [0, 0, 0, 3]  # one applied, three saw it done
        assert applied(url) == every
        assert rollback(url) == ["0003.api_keys"]
        with psycopg.connect(url) as conn:
            keys = "SELECT to_regclass('taskflow_api_keys')"
            assert conn.execute(keys).fetchone() == (None,)
        assert rollback(url) == ["0002.history"]
        with psycopg.connect(url) as conn:
            columns = (
                "SELECT count(*) FROM information_schema.columns WHERE column_name = 'history'"
            )
            assert conn.execute(columns).fetchone() == (0,)
            assert conn.execute("SELECT to_regproc('taskflow_attempt')").fetchone() == (None,)
        assert sorted(rollback(url, steps=2)) == ["0001.jobs"]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('taskflow_jobs')").fetchone() == (None,)
        assert migrate(url) == every
    finally:
        admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def plan(url: str, sql: str, params: dict[str, Any]) -> str:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()  # type: ignore[arg-type]
        assert rows is not None
        return json.dumps(rows[0])


async def test_listing_and_sweep_queries_use_their_indexes(
    pg_store: PostgresJobStore, pg_url: str
) -> None:
    # Given 20,000 rows where each filter is selective (1 % pending, 0.5 % per task, ...)
    now = time.time()

    def status(i: int) -> JobStatus:
        return {0: JobStatus.PENDING, 1: JobStatus.SCHEDULED}.get(i % 100, JobStatus.COMPLETED)

    for chunk in range(10):
        await pg_store.insert(
            [
                job(
                    now - i,
                    task=f"t{i % 200}",
                    queue=f"q{i % 100}",
                    status=status(i),
                    run_at=now + i,
                )
                for i in range(chunk * 2000, (chunk + 1) * 2000)
            ],
            now=now,
        )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ANALYZE taskflow_jobs")
    sql = pg_store._sql
    ts = datetime.fromtimestamp(now, UTC)
    base = {
        "status": None,
        "task": None,
        "queue": None,
        "before_at": None,
        "before_id": None,
        "limit": 50,
        "offset": 0,
    }
    # Then each listing, the promotion and the lease sweep read through an index
    expectations = {
        "unfiltered": (sql["list_jobs"], base, "taskflow_jobs_created"),
        "by status": (
            sql["list_jobs"],
            {**base, "status": "pending"},
            "taskflow_jobs_status_created",
        ),
        "by task": (sql["list_jobs"], {**base, "task": "t7"}, "taskflow_jobs_task_created"),
        "by queue": (sql["list_jobs"], {**base, "queue": "q3"}, "taskflow_jobs_queue_created"),
        "next run": (sql["next_run_at"], {}, "taskflow_jobs_due"),
        # No job is running: the planner may pick either index that finds none at once.
        "leases": (
            sql["recover_expired"],
            {"now": ts, "limit": 100, "error": "{}", "owners": []},
            ("taskflow_jobs_leases", "taskflow_jobs_status_created"),
        ),
        "purge": (
            sql["purge_jobs"],
            {"completed_before": ts, "failed_before": ts, "limit": 100},
            "taskflow_jobs_finished",
        ),
    }
    for what, (statement, params, index) in expectations.items():
        found = plan(pg_url, statement, params)
        assert "Seq Scan" not in found, what
        assert any(name in found for name in ([index] if isinstance(index, str) else index)), what


async def test_the_whole_tree_runs_on_postgres(pg_store: PostgresJobStore) -> None:
    registry = TaskRegistry()

    @registry.task(name="square")
    async def square(payload: dict[str, Any], ctx: JobContext) -> int:
        ctx.progress(50)
        return int(payload["n"]) ** 2

    @registry.task(name="flaky", max_attempts=3, retry=RetryPolicy(base=0.01, cap=0.05))
    async def flaky(payload: dict[str, Any], ctx: JobContext) -> int:
        if ctx.attempt < 2:
            raise ConnectionError("first attempt fails")
        return ctx.attempt

    resources = Resources(
        store=pg_store,
        queries=pg_store,
        transport=MemoryTransport(),
        events=MemoryEventBus(),
        logs=MemoryLogStore(),
        clock=WallClock(),
    )
    async with open_runtime(
        registry, resources, TreeConfig(concurrency=16, promote_interval=0.05)
    ) as rt:
        ids = await rt.submit_many(
            [taskflow_new("square", {"n": n}) for n in range(300)]
            + [taskflow_new("flaky", {})] * 20
        )
        await rt.wait_idle(timeout=60)
        jobs = [await rt.get(i) for i in ids]
    assert [j.result for j in jobs[:300]] == [n * n for n in range(300)]
    assert all(j.status is JobStatus.COMPLETED for j in jobs)
    assert {j.attempts for j in jobs[300:]} == {2}


def taskflow_new(task: str, payload: dict[str, Any]) -> Any:
    from taskflow.messages import NewJob

    return NewJob(task=task, payload=payload)
