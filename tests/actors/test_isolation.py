"""One bad value never hurts another job: refused at the edge, and isolated when it slips by.

Run against the in-memory twin (which refuses what PostgreSQL refuses) and against
PostgreSQL itself. The first line of defence is the edge (the Python API names the field);
the second is the split of a batch the store refused, tested here by handing the actors a
value the edge would have stopped.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import actors.attempt
import actors.ingest
from actors.ingest import Ingest
from actors.persist import settle_isolated
from actors.runtime import Runtime, open_runtime
from actors.tree import TreeConfig
from taskflow import JobContext, TaskRegistry
from taskflow.clock import AnyioClock, WallClock
from taskflow.errors import NotStorable, ValidationError
from taskflow.jobs import Job, JobStatus
from taskflow.main import local_resources
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryTransport
from taskflow.messages import NewJob, SubmitJobs
from taskflow.ports import Complete, JobStore
from taskflow.postgres import open_store

pytestmark = pytest.mark.anyio


def make_registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(name="echo")
    async def echo(payload: dict[str, Any], ctx: JobContext) -> Any:
        return payload

    @registry.task(name="poison")
    async def poison(payload: dict[str, Any], ctx: JobContext) -> Any:
        return {"s": "x\x00y"} if payload.get("shape") == "dict" else ["\x00"]

    @registry.task(name="boom", max_attempts=2)
    async def boom(payload: dict[str, Any], ctx: JobContext) -> None:
        raise ValueError("bad \x00 message \ud800")

    @registry.task(name="chatty")
    def chatty(payload: dict[str, Any], ctx: JobContext) -> str:
        ctx.progress(50, "half \x00 way")
        return "done"

    return registry


@pytest.fixture(params=["memory", "postgres"])
async def runtime(request: pytest.FixtureRequest) -> AsyncIterator[Runtime]:
    config = TreeConfig(concurrency=8, shutdown_grace=1.0, promote_interval=0.05)
    if request.param == "memory":
        store = MemoryJobStore()
        res = local_resources(store, clock=AnyioClock())
        async with open_runtime(make_registry(), res, config) as rt:
            yield rt
        return
    async with open_store(request.getfixturevalue("pg_url")) as pg:
        res = local_resources(pg)
        async with open_runtime(make_registry(), res, config) as rt:
            yield rt


# ------------------------------------------------------------------ the edge


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"s": "a\x00b"}, "payload.s"),
        ({"deep": [{"k\x00": 1}]}, "payload.deep[0]['k\\x00']"),
        ({"s": "\udc00"}, "payload.s"),
        ({"n": float("nan")}, "payload.n"),
        ({"n": 10**5000}, "payload.n"),
        ({"when": datetime.datetime(2026, 12, 2)}, "payload.when"),
    ],
)
async def test_the_python_api_refuses_an_unstorable_payload_naming_the_field(
    runtime: Runtime, payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await runtime.submit("echo", payload)
    assert field in caught.value.details["fields"]
    with pytest.raises(ValidationError) as caught:
        await runtime.submit("echo", payload, idempotency_key="k-1")
    assert list(caught.value.details["fields"]) in ([field], [f"jobs[0].{field}"])
    batch = [NewJob(task="echo", payload={"ok": 1}), NewJob(task="echo", payload=payload)]
    with pytest.raises(ValidationError) as caught:
        await runtime.submit_many(batch)
    assert f"jobs[1].{field}" in caught.value.details["fields"]
    assert (await runtime.get(await runtime.submit("echo", {"ok": 2}))).payload == {"ok": 2}


async def test_an_idempotency_key_or_queue_with_a_nul_is_refused(runtime: Runtime) -> None:
    with pytest.raises(ValidationError) as caught:
        await runtime.submit("echo", {}, idempotency_key="k\x00")
    assert "idempotency_key" in caught.value.details["fields"]
    with pytest.raises(ValidationError) as caught:
        await runtime.submit("echo", {}, queue="q\x00")
    assert "queue" in caught.value.details["fields"]


# ------------------------------------------------------------------ outcomes


async def test_unstorable_results_errors_and_progress_never_stall_their_neighbours(
    runtime: Runtime,
) -> None:
    with anyio.fail_after(30):
        good = [await runtime.submit("echo", {"i": i}) for i in range(20)]
        bad_result = await runtime.submit("poison", {"shape": "dict"})
        bad_error = await runtime.submit("boom", {})
        chatty = await runtime.submit("chatty", {})
        more = [await runtime.submit("echo", {"i": i}) for i in range(20, 40)]
        jobs = {j: await runtime.wait(j) for j in [*good, bad_result, bad_error, chatty, *more]}
    for job_id in [*good, *more]:
        assert jobs[job_id].status is JobStatus.COMPLETED
        assert jobs[job_id].attempts == 1
    refused = jobs[bad_result]
    assert refused.status is JobStatus.FAILED and refused.in_dlq
    assert refused.attempts == 1
    assert refused.error is not None and refused.error.code == "result_not_storable"
    assert "result.s" in refused.error.message
    failed = jobs[bad_error]
    assert failed.status is JobStatus.FAILED and failed.attempts == 2  # retried as usual
    assert failed.error is not None and failed.error.message == "bad \ufffd message \ufffd"
    assert jobs[chatty].status is JobStatus.COMPLETED and jobs[chatty].result == "done"
    assert runtime.retrying() == {}


async def test_a_result_that_slips_past_the_check_is_isolated_by_splitting_the_batch(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The executor's own check is switched off: the store itself refuses the value.
    monkeypatch.setattr(actors.attempt, "find_unstorable_result", lambda value: None)
    with anyio.fail_after(30):
        ids = [await runtime.submit("echo", {"i": i}) for i in range(10)]
        bad = await runtime.submit("poison", {})
        ids += [await runtime.submit("echo", {"i": i}) for i in range(10, 20)]
        jobs = {j: await runtime.wait(j) for j in [*ids, bad]}
    assert {(jobs[j].status, jobs[j].attempts) for j in ids} == {(JobStatus.COMPLETED, 1)}
    assert jobs[bad].status is JobStatus.FAILED and jobs[bad].attempts == 1
    assert jobs[bad].error is not None and jobs[bad].error.code == "result_not_storable"


# ------------------------------------------------------------------ batches split


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[JobStore]:
    if request.param == "memory":
        yield MemoryJobStore()
        return
    async with open_store(request.getfixturevalue("pg_url")) as pg:
        yield pg


async def claimed(store: JobStore, n: int) -> list[Job]:
    from tests.contract.test_job_store import make_job

    jobs = [make_job() for _ in range(n)]
    await store.insert(jobs, now=1.0)
    return await store.claim([j.id for j in jobs], owner="w", now=1.0, lease_until=100.0)


async def test_settle_isolated_applies_every_change_but_the_refused_one(store: JobStore) -> None:
    jobs = await claimed(store, 7)
    changes = [Complete(job_id=j.id, attempt=1, result={"i": i}) for i, j in enumerate(jobs)]
    changes[4] = Complete(job_id=jobs[4].id, attempt=1, result={"bad": "\x00"})
    applied = await settle_isolated(store, changes, now=2.0, what="settle")
    assert isinstance(applied[4], NotStorable)
    for i, job in enumerate(applied):
        if i != 4:
            assert isinstance(job, Job) and job.status is JobStatus.COMPLETED


async def test_a_group_commit_refused_for_one_submission_stores_all_the_others(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The edge's check is switched off, as if it had let a bad value through: the store
    # itself refuses the value, inside a group commit of 26 concurrent submissions.
    monkeypatch.setattr(actors.ingest, "find_unstorable", lambda value, where: None)
    ingest = Ingest(
        store=store,
        transport=MemoryTransport(),
        events=MemoryEventBus(),
        registry=make_registry(),
        clock=WallClock(),
    )
    payloads: list[dict[str, Any]] = [{"i": i} for i in range(25)]
    payloads.insert(12, {"s": "\x00"})
    outcomes: dict[int, Any] = {}

    async def submit(n: int) -> None:
        try:
            outcomes[n] = await ingest.submit(
                SubmitJobs(jobs=(NewJob(task="echo", payload=payloads[n]),))
            )
        except NotStorable as exc:
            outcomes[n] = exc

    try:
        async with anyio.create_task_group() as tg:
            await tg.start(ingest.run)
            with anyio.fail_after(10):
                async with anyio.create_task_group() as callers:
                    for n in range(len(payloads)):
                        callers.start_soon(submit, n)
            tg.cancel_scope.cancel()
    finally:
        ingest.close()
    assert isinstance(outcomes[12], NotStorable)
    assert ingest.statistics().batches < 26  # they really shared group commits
    good = [outcomes[n] for n in range(len(payloads)) if n != 12]
    stored = [await store.get(inserted.job_ids[0]) for inserted in good]
    assert sorted(j.payload["i"] for j in stored) == list(range(25))
