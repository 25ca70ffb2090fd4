"""DLQ keeper alone: bury dead letters with their reason; replay one, many, all."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

import anyio
import pytest
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from actors.dlq import DlqKeeper
from actors.settle import Recorder
from taskflow.clock import AnyioClock
from taskflow.codec import decode
from taskflow.errors import LogStoreError
from taskflow.jobs import Job, JobError, JobStatus
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryLogStore, MemoryTransport
from taskflow.messages import (
    AttemptFailed,
    DeadLetterJob,
    Event,
    JobDeadLettered,
    JobFailed,
    JobMessage,
    JobReplayed,
    RunJob,
)
from taskflow.ports import Deliveries

pytestmark = pytest.mark.anyio

E = TypeVar("E")

BOOM = JobError(code="task_error", message="boom", type="builtins.RuntimeError")


@dataclass(kw_only=True)
class Harness:
    dlq: DlqKeeper
    store: MemoryJobStore
    transport: MemoryTransport
    bus: MemoryEventBus
    clock: AnyioClock
    deliveries: Deliveries
    dead: MemoryObjectSendStream[DeadLetterJob]


@asynccontextmanager
async def running_dlq() -> AsyncIterator[Harness]:
    store, transport, bus, clock = (
        MemoryJobStore(),
        MemoryTransport(),
        MemoryEventBus(),
        AnyioClock(),
    )
    dead_send, dead = anyio.create_memory_object_stream[DeadLetterJob](64)
    async with dead_send, dead, transport.consume(["default"], prefetch=64) as deliveries:
        dlq = DlqKeeper(
            inbox=dead,
            recorder=Recorder(store=store, transport=transport, events=bus, clock=clock),
            store=store,
            queries=store,
            transport=transport,
            events=bus,
            clock=clock,
            logs=MemoryLogStore(),
        )
        async with anyio.create_task_group() as tg:
            await tg.start(dlq.run)
            yield Harness(
                dlq=dlq,
                store=store,
                transport=transport,
                bus=bus,
                clock=clock,
                deliveries=deliveries,
                dead=dead_send,
            )
            tg.cancel_scope.cancel()


async def claim(h: Harness, *, max_attempts: int = 3) -> RunJob:
    """A job whose last attempt runs, with its delivery open."""
    now = h.clock.now()
    job = Job(
        id=str(uuid.uuid4()),
        task="echo",
        max_attempts=max_attempts,
        attempts=max_attempts - 1,
        created_at=now,
        updated_at=now,
    )
    await h.store.insert([job], now=now)
    await h.transport.publish([JobMessage(job_id=job.id, task="echo", queue="default")])
    delivery = h.deliveries.receive_nowait()
    (claimed,) = await h.store.claim([job.id], owner="w", now=now, lease_until=now + 60)
    return RunJob(job=claimed, delivery_tag=delivery.tag)


def dead_letter(h: Harness, run: RunJob, code: str = "max_attempts_exceeded") -> DeadLetterJob:
    now = h.clock.now()
    failure = AttemptFailed(
        job_id=run.job.id,
        task=run.job.task,
        attempt=run.job.attempts,
        max_attempts=run.job.max_attempts,
        at=now,
        started_at=now,
        error=BOOM,
        delivery_tag=run.delivery_tag,
    )
    return DeadLetterJob(failure=failure, code=code)


async def next_event(events: ObjectReceiveStream[Event], kind: type[E]) -> E:
    with anyio.fail_after(5):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError("the event bus closed")


def queued(h: Harness) -> list[str]:
    ids = []
    while True:
        try:
            delivery = h.deliveries.receive_nowait()
        except anyio.WouldBlock:
            return ids
        message = decode(delivery.body)
        assert isinstance(message, JobMessage)
        ids.append(message.job_id)


async def bury(h: Harness, code: str = "max_attempts_exceeded") -> Job:
    async with h.bus.subscribe() as events:
        run = await claim(h)
        await h.dead.send(dead_letter(h, run, code))
        await next_event(events, JobDeadLettered)
    return h.store.jobs[run.job.id]


# ------------------------------------------------------------------ bury


@pytest.mark.parametrize("code", ["max_attempts_exceeded", "non_retryable"])
async def test_a_dead_letter_is_buried_with_its_reason_and_acked(code: str) -> None:
    async with running_dlq() as h, h.bus.subscribe() as events:
        run = await claim(h)
        await h.dead.send(dead_letter(h, run, code))
        failed = await next_event(events, JobFailed)
        event = await next_event(events, JobDeadLettered)

        job = h.store.jobs[run.job.id]
        # Announced once buried: the attempt failed and will not be retried, then the burial
        assert (failed.job_id, failed.attempt, failed.will_retry) == (run.job.id, 3, False)
        assert failed.error == job.error
        assert job.status is JobStatus.FAILED
        assert job.in_dlq
        assert job.error is not None
        assert job.error.reason == code
        assert (job.error.code, job.error.message) == (BOOM.code, BOOM.message)
        assert job.lease_owner is None
        assert h.transport.unsettled() == 0
        assert (event.job_id, event.attempt, event.task) == (run.job.id, 3, "echo")
        assert event.error == job.error
        assert h.store.dead_letters() == [job]
        assert h.dlq.statistics().buried == 1
        assert [j.id for j in await h.dlq.dead_letters()] == [job.id]


# ------------------------------------------------------------------ replay


async def test_replay_runs_a_dead_letter_again_and_keeps_its_lineage() -> None:
    async with running_dlq() as h:
        buried = await bury(h)
        async with h.bus.subscribe() as events:
            replayed = await h.dlq.replay([buried.id])
            event = await next_event(events, JobReplayed)

        job = h.store.jobs[buried.id]
        assert replayed == [replace(job, published=False)]  # as replayed, before the publish
        assert job.published  # then published through the outbox
        assert job.status is JobStatus.PENDING
        assert job.attempts == 0
        assert job.replay_count == 1
        assert job.original_error == buried.error
        assert job.original_error is not None
        assert job.original_error.reason == "max_attempts_exceeded"
        assert job.error is None
        assert job.finished_at is None
        assert queued(h) == [buried.id]
        assert (event.job_id, event.replay_count) == (buried.id, 1)
        assert h.store.dead_letters() == []
        assert h.dlq.statistics().replayed == 1


async def test_replay_skips_jobs_that_are_not_dead_letters() -> None:
    async with running_dlq() as h, h.bus.subscribe() as events:
        now = h.clock.now()
        alive = [
            Job(id=f"j-{s.value}", task="echo", status=s, created_at=now, updated_at=now)
            for s in (JobStatus.PENDING, JobStatus.IN_PROGRESS, JobStatus.COMPLETED)
        ]
        await h.store.insert(alive, now=now)
        assert await h.dlq.replay([j.id for j in alive] + ["missing"]) == []
        assert [h.store.jobs[j.id] for j in alive] == alive
        assert h.transport.published == 0
        await anyio.sleep(0.01)
        with pytest.raises(anyio.WouldBlock):
            events.receive_nowait()


async def test_replay_all_replays_every_dead_letter() -> None:
    async with running_dlq() as h:
        now = h.clock.now()
        dead = dead_letters(7, now)
        alive = Job(id="alive", task="echo", created_at=now, updated_at=now)
        await h.store.insert([*dead, alive], now=now)

        assert await h.dlq.replay_matching(batch=3) == 7

        assert {h.store.jobs[j.id].status for j in dead} == {JobStatus.PENDING}
        assert all(h.store.jobs[j.id].replay_count == 1 for j in dead)
        assert sorted(queued(h)) == sorted(j.id for j in dead)
        assert h.store.dead_letters() == []
        assert h.store.jobs["alive"] == alive


async def test_a_replayed_job_does_not_inherit_an_old_cancel_request() -> None:
    """Replay starts a new attempt series; a cancel asked of the old one must not cancel it."""
    async with running_dlq() as h:
        run = await claim(h)
        # Given: a cancel was requested while the last attempt ran, but it failed first
        await h.store.cancel(run.job.id, now=h.clock.now())
        async with h.bus.subscribe() as events:
            await h.dead.send(dead_letter(h, run))
            await next_event(events, JobDeadLettered)
        assert h.store.jobs[run.job.id].status is JobStatus.FAILED

        # When: an operator replays it
        (job,) = await h.dlq.replay([run.job.id])

        # Then: it is a fresh job; the executor would otherwise cancel it on start
        assert job.status is JobStatus.PENDING
        assert job.cancel_requested is False


async def test_purge_deletes_the_jobs_even_when_the_log_store_is_down() -> None:
    async with running_dlq() as h:
        now = h.clock.now()
        dead = dead_letters(3, now)
        await h.store.insert(dead, now=now)
        logs = h.dlq.logs
        assert isinstance(logs, MemoryLogStore)
        logs.fail = LogStoreError("S3 is down")
        assert await h.dlq.purge(batch=2) == 3
        assert not any(j.id in h.store.jobs for j in dead)


def dead_letters(n: int, now: float) -> list[Job]:
    """``n`` dead letters that died before ``now``, oldest first."""
    return [
        Job(
            id=f"dead-{i}",
            task="echo",
            status=JobStatus.FAILED,
            attempts=3,
            error=BOOM,
            created_at=now - 10 + i,
            updated_at=now - 10 + i,
            finished_at=now - 10 + i,
        )
        for i in range(n)
    ]
