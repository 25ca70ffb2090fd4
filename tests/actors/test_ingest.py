"""Ingest alone, against the in-memory twins: group commit, validation, idempotency, shutdown."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from actors.ingest import Ingest, new_ids
from taskflow.clock import AnyioClock
from taskflow.codec import decode
from taskflow.errors import (
    IdempotencyConflict,
    ShuttingDown,
    UnknownTask,
    ValidationError,
)
from taskflow.jobs import JobStatus
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryTransport
from taskflow.messages import Event, JobMessage, JobSubmitted, NewJob, SubmitJobs
from taskflow.ports import Inserted
from taskflow.registry import TaskRegistry

pytestmark = pytest.mark.anyio


def make_registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(name="echo")
    async def echo(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return payload

    return registry


@dataclass(kw_only=True)
class Harness:
    ingest: Ingest
    store: MemoryJobStore
    transport: MemoryTransport
    bus: MemoryEventBus
    clock: AnyioClock
    stopped: anyio.Event


@asynccontextmanager
async def running_ingest() -> AsyncIterator[Harness]:
    store, transport, bus, clock = (
        MemoryJobStore(),
        MemoryTransport(),
        MemoryEventBus(),
        AnyioClock(),
    )
    ingest = Ingest(
        store=store,
        transport=transport,
        events=bus,
        registry=make_registry(),
        clock=clock,
    )
    stopped = anyio.Event()

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        await ingest.run(task_status=task_status)
        stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            await tg.start(run)
            yield Harness(
                ingest=ingest,
                store=store,
                transport=transport,
                bus=bus,
                clock=clock,
                stopped=stopped,
            )
            tg.cancel_scope.cancel()
    finally:
        ingest.close()


async def wait_until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110 - the twins expose no event to wait on
            await anyio.sleep(0.001)


def one(task: str = "echo", **kw: Any) -> SubmitJobs:
    return SubmitJobs(jobs=(NewJob(task=task, **kw),))


async def drain_published(transport: MemoryTransport) -> list[JobMessage]:
    """Every message waiting on the default queue, decoded (through the public consume API)."""
    messages: list[JobMessage] = []
    async with transport.consume(["default"], prefetch=10_000) as deliveries:
        while True:
            try:
                delivery = deliveries.receive_nowait()
            except anyio.WouldBlock:
                break
            message = decode(delivery.body)
            assert isinstance(message, JobMessage)
            messages.append(message)
    return messages


def submitted(events: list[Event]) -> list[JobSubmitted]:
    return [e for e in events if isinstance(e, JobSubmitted)]


# ------------------------------------------------------------------ group commit


async def test_fifty_concurrent_submits_are_group_committed_and_published_once() -> None:
    async with running_ingest() as h, h.bus.subscribe(buffer=1024) as events:
        results: list[Inserted] = []

        async def submit(i: int) -> None:
            results.append(await h.ingest.submit(one(payload={"i": i})))

        # When: 50 callers submit at the same time
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(submit, i)

        # Then: a handful of INSERTs, not 50; every job stored and published exactly once
        ids = [job_id for r in results for job_id in r.job_ids]
        assert len(results) == 50
        assert len(set(ids)) == 50
        assert not any(r.replayed for r in results)
        assert h.store.writes["insert"] <= 5, h.store.writes
        jobs = h.store.jobs
        assert set(jobs) == set(ids)
        assert {jobs[i].status for i in ids} == {JobStatus.PENDING}
        assert sorted(j.payload["i"] for j in jobs.values()) == list(range(50))
        assert h.transport.published == 50
        published = Counter(m.job_id for m in await drain_published(h.transport))
        assert published == Counter(dict.fromkeys(ids, 1))
        assert h.ingest.statistics().submitted == 50
        assert h.ingest.statistics().batches <= 5

        # And: one JobSubmitted event per job
        await wait_until(lambda: events.statistics().current_buffer_used >= 50)
        seen = submitted([events.receive_nowait() for _ in range(50)])
        assert sorted(e.job_id for e in seen) == sorted(ids)
        assert not any(e.scheduled for e in seen)


async def test_a_batch_submit_returns_the_ids_in_order() -> None:
    async with running_ingest() as h:
        with anyio.fail_after(5):
            inserted = await h.ingest.submit(
                SubmitJobs(jobs=tuple(NewJob(task="echo", payload={"n": n}) for n in range(3)))
            )
        assert [h.store.jobs[i].payload["n"] for i in inserted.job_ids] == [0, 1, 2]
        assert h.transport.published == 3


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"priority": 10}, "priority", id="priority-10"),
        pytest.param({"priority": -1}, "priority", id="priority-negative"),
        pytest.param({"delay": -1.0}, "delay", id="negative-delay"),
        pytest.param({"max_attempts": 0}, "max_attempts", id="max-attempts-0"),
        pytest.param({"timeout": 0.0}, "timeout", id="timeout-0"),
    ],
)
async def test_an_invalid_job_is_rejected_with_the_field_named_and_nothing_stored(
    overrides: dict[str, Any], field: str
) -> None:
    async with running_ingest() as h:
        # Given: a batch with one good job and one bad one
        command = SubmitJobs(jobs=(NewJob(task="echo"), NewJob(task="echo", **overrides)))
        with anyio.fail_after(5), pytest.raises(ValidationError) as caught:
            await h.ingest.submit(command)
        assert caught.value.code == "validation_error"
        assert field in caught.value.details["fields"], caught.value.details
        # Then: the whole batch is refused
        assert h.store.jobs == {}
        assert h.store.writes["insert"] == 0
        assert h.transport.published == 0


async def test_an_empty_batch_is_a_validation_error() -> None:
    async with running_ingest() as h:
        with anyio.fail_after(5), pytest.raises(ValidationError) as caught:
            await h.ingest.submit(SubmitJobs(jobs=()))
        assert caught.value.code == "validation_error"
        assert caught.value.details == {"field": "data"}
        assert h.store.writes["insert"] == 0


async def test_an_unknown_task_is_refused() -> None:
    async with running_ingest() as h:
        command = SubmitJobs(jobs=(NewJob(task="echo"), NewJob(task="nope")))
        with anyio.fail_after(5), pytest.raises(UnknownTask) as caught:
            await h.ingest.submit(command)
        assert caught.value.code == "unknown_task"
        assert caught.value.details == {"task": "nope"}
        assert h.store.jobs == {}
        assert h.transport.published == 0


# ------------------------------------------------------------------ delay


async def test_a_delayed_job_is_stored_scheduled_and_not_published() -> None:
    async with running_ingest() as h, h.bus.subscribe() as events:
        before = h.clock.now()
        with anyio.fail_after(5):
            inserted = await h.ingest.submit(one(delay=30.0))
        after = h.clock.now()
        job = h.store.jobs[inserted.job_ids[0]]
        assert job.status is JobStatus.SCHEDULED
        assert job.run_at is not None
        assert before + 30.0 <= job.run_at <= after + 30.0
        assert job.run_at - job.created_at == pytest.approx(30.0)
        assert h.transport.published == 0
        assert h.transport.depth() == 0
        with anyio.fail_after(5):
            event = await events.receive()
        assert isinstance(event, JobSubmitted)
        assert event.job_id == job.id
        assert event.scheduled is True


# ------------------------------------------------------------------ idempotency


async def test_the_same_key_and_hash_replays_the_first_batch() -> None:
    async with running_ingest() as h, h.bus.subscribe() as events:
        command = SubmitJobs(
            jobs=(NewJob(task="echo", payload={"a": 1}),), idempotency_key="k1", request_hash="h1"
        )
        with anyio.fail_after(5):
            first = await h.ingest.submit(command)
            second = await h.ingest.submit(command)
        assert first.replayed is False
        assert second.replayed is True
        assert second.job_ids == first.job_ids
        assert len(h.store.jobs) == 1
        assert h.transport.published == 1
        # Only the first submission announced a job
        await anyio.sleep(0.01)
        seen = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except anyio.WouldBlock:
                break
        assert [e.job_id for e in submitted(seen)] == list(first.job_ids)


async def test_the_same_key_with_another_hash_is_a_conflict() -> None:
    async with running_ingest() as h:
        with anyio.fail_after(5):
            await h.ingest.submit(
                SubmitJobs(jobs=(NewJob(task="echo"),), idempotency_key="k", request_hash="h1")
            )
            with pytest.raises(IdempotencyConflict) as caught:
                await h.ingest.submit(
                    SubmitJobs(jobs=(NewJob(task="echo"),), idempotency_key="k", request_hash="h2")
                )
        assert caught.value.code == "idempotency_conflict"
        assert len(h.store.jobs) == 1
        assert h.transport.published == 1


# ------------------------------------------------------------------ failures and shutdown


async def test_after_stop_submit_raises_shutting_down_and_run_returns() -> None:
    async with running_ingest() as h:
        with anyio.fail_after(5):
            await h.ingest.submit(one())
            await h.ingest.stop()
            with pytest.raises(ShuttingDown) as caught:
                await h.ingest.submit(one())
            await h.stopped.wait()
        assert caught.value.code == "shutting_down"
        assert len(h.store.jobs) == 1


async def test_a_publish_failure_after_the_commit_is_accepted_and_left_to_the_outbox() -> None:
    """Invariant 1: once the rows are committed the submission is accepted; the publish that
    failed (after ``submit`` returned: the publisher runs off the caller's path) is the
    outbox's to redo (the reaper's sweep, tested in test_reaper.py)."""
    async with running_ingest() as h, h.bus.subscribe() as events:
        h.transport.outage = RuntimeError("down")
        with anyio.fail_after(5):
            inserted = await h.ingest.submit(one())
            while h.ingest.statistics().publish_deferred < 1:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        (job_id,) = inserted.job_ids
        job = h.store.jobs[job_id]
        assert (job.status, job.published) == (JobStatus.PENDING, False)
        assert h.transport.published == 0
        assert h.ingest.statistics().publish_deferred == 1
        with anyio.fail_after(5):
            submitted = await events.receive()
        assert isinstance(submitted, JobSubmitted)
        assert submitted.job_id == job_id
        # A keyed retry of the same request is answered from the key, not stored twice
        command = SubmitJobs(jobs=(NewJob(task="echo"),), idempotency_key="k", request_hash="h")
        with anyio.fail_after(5):
            first = await h.ingest.submit(command)
            while h.ingest.statistics().publish_deferred < 2:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        h.transport.outage = None
        with anyio.fail_after(5):
            again = await h.ingest.submit(command)
        assert again.replayed and again.job_ids == first.job_ids
        assert len(h.store.jobs) == 2
        # Once the transport is back the ingest publishes and marks new jobs at once
        with anyio.fail_after(5):
            fresh = await h.ingest.submit(one())
            while not h.store.jobs[fresh.job_ids[0]].published:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        assert h.transport.published == 1


def test_new_ids_are_distinct_version_4_uuids_in_their_canonical_form() -> None:
    ids = list(new_ids(2000))
    assert len(set(ids)) == 2000
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, job_id)
    assert list(new_ids(0)) == []
