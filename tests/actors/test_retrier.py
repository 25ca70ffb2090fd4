"""Retrier alone: backoff and reschedule, give up to the DLQ keeper, promote due jobs.

Tests where time matters run on trio's MockClock (virtual time, no threads involved).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.retrier import Retrier
from actors.settle import Recorder
from taskflow.clock import AnyioClock
from taskflow.codec import decode
from taskflow.context import JobContext
from taskflow.jobs import Job, JobError, JobStatus
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryTransport
from taskflow.messages import (
    AttemptFailed,
    DeadLetterJob,
    Event,
    JobFailed,
    JobMessage,
    JobScheduled,
    JobSubmitted,
    RunJob,
)
from taskflow.ports import Deliveries
from taskflow.registry import TaskRegistry, type_names
from taskflow.retry import RetryPolicy
from tests.conftest import mock_clock_backend

pytestmark = pytest.mark.anyio

BOOM = JobError(code="task_error", message="boom", type="builtins.RuntimeError")
CEILING = 10.0  # RetryPolicy(base=10): the backoff ceiling after attempt 1


class BadInput(ValueError):
    pass


def make_registry() -> TaskRegistry:
    registry = TaskRegistry()

    async def noop(payload: dict[str, Any], ctx: JobContext) -> None:
        return None

    registry.task(noop, name="flaky", retry=RetryPolicy(base=CEILING))
    registry.task(noop, name="quick", retry=RetryPolicy(base=0.5, cap=3600.0))
    registry.task(
        noop, name="strict", retry=RetryPolicy(non_retryable=frozenset({"builtins.ValueError"}))
    )
    return registry


@dataclass(kw_only=True)
class Harness:
    retrier: Retrier
    store: MemoryJobStore
    transport: MemoryTransport
    bus: MemoryEventBus
    clock: AnyioClock
    deliveries: Deliveries
    failures: MemoryObjectSendStream[AttemptFailed]
    dead: MemoryObjectReceiveStream[DeadLetterJob]


@asynccontextmanager
async def running_retrier(*, promote_interval: float = 1.0) -> AsyncIterator[Harness]:
    store, transport, bus, clock = (
        MemoryJobStore(),
        MemoryTransport(),
        MemoryEventBus(),
        AnyioClock(),
    )
    failures_send, failures = anyio.create_memory_object_stream[AttemptFailed](64)
    dead_send, dead = anyio.create_memory_object_stream[DeadLetterJob](64)
    async with (
        failures_send,
        failures,
        dead_send,
        dead,
        transport.consume(["default"], prefetch=64) as deliveries,
    ):
        retrier = Retrier(
            inbox=failures,
            dead=dead_send,
            recorder=Recorder(store=store, transport=transport, events=bus, clock=clock),
            store=store,
            queries=store,
            transport=transport,
            events=bus,
            registry=make_registry(),
            clock=clock,
            rng=random.Random(7),
            promote_interval=promote_interval,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(retrier.run)
            yield Harness(
                retrier=retrier,
                store=store,
                transport=transport,
                bus=bus,
                clock=clock,
                deliveries=deliveries,
                failures=failures_send,
                dead=dead,
            )
            tg.cancel_scope.cancel()


async def claim(h: Harness, task: str, *, max_attempts: int = 3, attempts: int = 0) -> RunJob:
    """A job in progress with an open delivery, as the dispatcher leaves it."""
    now = h.clock.now()
    job = Job(
        id=str(uuid.uuid4()),
        task=task,
        max_attempts=max_attempts,
        attempts=attempts,
        created_at=now,
        updated_at=now,
    )
    await h.store.insert([job], now=now)
    await h.transport.publish([JobMessage(job_id=job.id, task=task, queue="default")])
    delivery = h.deliveries.receive_nowait()
    message = decode(delivery.body)
    assert isinstance(message, JobMessage)
    assert message.job_id == job.id
    (claimed,) = await h.store.claim([job.id], owner="w", now=now, lease_until=now + 60)
    return RunJob(job=claimed, delivery_tag=delivery.tag)


def failure_of(
    h: Harness,
    run: RunJob,
    *,
    error_types: tuple[str, ...] = (),
    retryable: bool = True,
    retry_delay: float | None = None,
    attempt: int | None = None,
) -> AttemptFailed:
    now = h.clock.now()
    return AttemptFailed(
        job_id=run.job.id,
        task=run.job.task,
        attempt=run.job.attempts if attempt is None else attempt,
        max_attempts=run.job.max_attempts,
        at=now,
        started_at=now,
        error=BOOM,
        error_types=error_types,
        retryable=retryable,
        retry_delay=retry_delay,
        delivery_tag=run.delivery_tag,
    )


async def next_scheduled(events: ObjectReceiveStream[Event], job_id: str) -> JobScheduled:
    with anyio.fail_after(5):
        async for event in events:
            if isinstance(event, JobScheduled) and event.job_id == job_id:
                return event
    raise AssertionError("the event bus closed")


async def next_dead(h: Harness) -> DeadLetterJob:
    with anyio.fail_after(5):
        return await h.dead.receive()


def pending_events(events: ObjectReceiveStream[Event]) -> list[Event]:
    """The events already delivered to a subscription, without waiting."""
    seen: list[Event] = []
    while True:
        try:
            seen.append(events.receive_nowait())
        except anyio.WouldBlock:
            return seen


async def wait_until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110 - the twins expose no event to wait on
            await anyio.sleep(0.001)


def queued(h: Harness) -> list[str]:
    """Ids of the messages now waiting on the queue (taken off it)."""
    ids = []
    while True:
        try:
            delivery = h.deliveries.receive_nowait()
        except anyio.WouldBlock:
            return ids
        message = decode(delivery.body)
        assert isinstance(message, JobMessage)
        ids.append(message.job_id)


# ------------------------------------------------------------------ retry


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_a_failure_with_attempts_left_is_scheduled_then_promoted_when_due() -> None:
    async with running_retrier(promote_interval=3600.0) as h, h.bus.subscribe() as events:
        run = await claim(h, "flaky")
        published = h.transport.published
        before = h.clock.now()

        # When: attempt 1 of 3 fails
        await h.failures.send(failure_of(h, run))
        event = await next_scheduled(events, run.job.id)

        # Then: scheduled within the backoff ceiling, delivery acked, event published
        job = h.store.jobs[run.job.id]
        assert job.status is JobStatus.SCHEDULED
        assert job.run_at == event.run_at
        assert before <= event.at <= h.clock.now()
        assert event.at <= job.run_at <= event.at + CEILING
        assert job.error == BOOM
        assert job.lease_owner is None
        assert event.attempt == 1
        assert h.transport.unsettled() == 0
        assert h.retrier.statistics().retried == 1

        # And: not promoted a moment before run_at ...
        remaining = job.run_at - h.clock.now()
        assert remaining > 0.02, "pick another rng seed: the jittered delay is too short"
        await anyio.sleep(remaining - 0.01)
        assert h.store.jobs[run.job.id].status is JobStatus.SCHEDULED
        assert h.transport.published == published
        # ... but promoted and published right after it
        await anyio.sleep(0.02)
        assert h.store.jobs[run.job.id].status is JobStatus.PENDING
        assert h.transport.published == published + 1
        assert queued(h) == [run.job.id]
        assert h.retrier.statistics().promoted == 1


async def test_the_public_failure_event_says_will_retry_and_carries_no_delivery() -> None:
    async with running_retrier(promote_interval=3600.0) as h, h.bus.subscribe() as events:
        run = await claim(h, "flaky")
        await h.failures.send(failure_of(h, run))
        with anyio.fail_after(5):
            first = await events.receive()
            second = await events.receive()
        assert isinstance(first, JobFailed)
        assert isinstance(second, JobScheduled)
        assert (first.job_id, first.attempt, first.max_attempts) == (run.job.id, 1, 3)
        assert (first.will_retry, first.error) == (True, BOOM)
        assert not hasattr(first, "delivery_tag")
        assert not hasattr(first, "log_lines")


async def test_a_requested_retry_delay_is_honoured_exactly() -> None:
    async with running_retrier() as h, h.bus.subscribe() as events:
        run = await claim(h, "quick")  # its own backoff would be at most 0.5 s
        await h.failures.send(failure_of(h, run, retry_delay=7.0))
        event = await next_scheduled(events, run.job.id)
        assert event.run_at - event.at == pytest.approx(7.0, abs=1e-6)
        assert h.store.jobs[run.job.id].run_at == event.run_at
        assert h.store.jobs[run.job.id].status is JobStatus.SCHEDULED


# ------------------------------------------------------------------ give up


async def test_the_last_attempt_goes_to_the_dlq_keeper_untouched() -> None:
    async with running_retrier() as h:
        run = await claim(h, "flaky", max_attempts=3, attempts=2)
        assert run.job.attempts == 3
        failed = failure_of(h, run)
        await h.failures.send(failed)
        dead = await next_dead(h)
        assert dead.code == "max_attempts_exceeded"
        assert dead.failure == failed
        # The DLQ keeper buries and acks it; the retrier writes nothing
        job = h.store.jobs[run.job.id]
        assert job.status is JobStatus.IN_PROGRESS
        assert h.transport.unsettled() == 1
        assert h.store.writes["settle"] == 0
        assert h.retrier.statistics().given_up == 1


async def test_a_non_retryable_failure_gives_up_at_once() -> None:
    async with running_retrier() as h:
        run = await claim(h, "flaky")
        await h.failures.send(failure_of(h, run, retryable=False))
        dead = await next_dead(h)
        assert dead.code == "non_retryable"
        assert dead.failure.attempt == 1
        assert h.store.jobs[run.job.id].status is JobStatus.IN_PROGRESS
        assert h.transport.unsettled() == 1


async def test_the_tasks_non_retryable_errors_are_honoured() -> None:
    async with running_retrier() as h, h.bus.subscribe() as events:
        # Given: a task whose policy lists ValueError as non-retryable
        bad = await claim(h, "strict")
        other = await claim(h, "strict")

        # When: one attempt fails with a subclass of ValueError, another with KeyError
        await h.failures.send(failure_of(h, bad, error_types=type_names(BadInput)))
        await h.failures.send(failure_of(h, other, error_types=type_names(KeyError)))

        # Then: the first gives up, the second is retried
        dead = await next_dead(h)
        assert dead.failure.job_id == bad.job.id
        assert dead.code == "non_retryable"
        await next_scheduled(events, other.job.id)
        assert h.store.jobs[other.job.id].status is JobStatus.SCHEDULED
        assert h.store.jobs[bad.job.id].status is JobStatus.IN_PROGRESS


# ------------------------------------------------------------------ stale


async def test_a_stale_failure_is_acked_counted_and_leaves_the_job_alone() -> None:
    async with running_retrier() as h, h.bus.subscribe() as events:
        run = await claim(h, "flaky")
        # Given: attempt 1 lost its lease and attempt 2 now runs elsewhere
        far = h.clock.now() + 1000
        await h.store.recover_expired(now=far, limit=10)
        (again,) = await h.store.claim([run.job.id], owner="other", now=far, lease_until=far + 60)
        assert again.attempts == 2

        # When: attempt 1's failure arrives late
        await h.failures.send(failure_of(h, run))
        await wait_until(lambda: h.retrier.statistics().stale == 1)

        # Then: its delivery is acked, the job is attempt 2's, no JobScheduled
        assert h.transport.unsettled() == 0
        assert h.store.jobs[run.job.id] == again
        assert h.retrier.statistics().retried == 0
        await anyio.sleep(0.01)
        stale = [e for e in pending_events(events) if isinstance(e, JobScheduled | JobFailed)]
        assert not stale


# ------------------------------------------------------------------ delayed submissions


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_a_delayed_submission_is_promoted_when_due_not_at_the_interval_cap() -> None:
    async with running_retrier(promote_interval=3600.0) as h:
        await anyio.sleep(1)  # the promoter now waits for its 3600 s cap

        # Given: ingest stored a job to run 30 s from now and announced it
        now = h.clock.now()
        job = Job(
            id="later",
            task="flaky",
            status=JobStatus.SCHEDULED,
            run_at=now + 30,
            created_at=now,
            updated_at=now,
        )
        await h.store.insert([job], now=now)
        await h.bus.publish(
            [JobSubmitted(job_id="later", task="flaky", queue="default", at=now, scheduled=True)]
        )

        # Then: still scheduled just before 30 s, pending and published just after
        await anyio.sleep(29.9)
        assert h.store.jobs["later"].status is JobStatus.SCHEDULED
        assert h.transport.published == 0
        await anyio.sleep(0.2)
        assert h.store.jobs["later"].status is JobStatus.PENDING
        assert queued(h) == ["later"]
        assert h.retrier.statistics().promoted == 1
