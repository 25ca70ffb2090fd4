"""Executor pool alone: outcomes, timeouts, threads, progress, cancel, concurrency, fencing.

Real time only: several tests run sync tasks in worker threads, which a MockClock would
autojump past.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.executor import ExecutorPool
from actors.inflight import InFlight
from actors.logship import LogShipper
from actors.settle import Recorder
from taskflow import joblog
from taskflow.clock import AnyioClock
from taskflow.codec import decode
from taskflow.context import JobContext
from taskflow.errors import Retry, StoreError
from taskflow.jobs import Job, JobStatus
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryLogStore, MemoryTransport
from taskflow.messages import (
    EVENT_RESULT_BYTES,
    AttemptFailed,
    Event,
    JobCancelled,
    JobFailed,
    JobMessage,
    JobProgressed,
    JobSucceeded,
    RunJob,
)
from taskflow.ports import Change, Deliveries
from taskflow.registry import TaskRegistry

pytestmark = pytest.mark.anyio

E = TypeVar("E")


@dataclass(kw_only=True)
class Harness:
    pool: ExecutorPool
    store: MemoryJobStore
    transport: MemoryTransport
    bus: MemoryEventBus
    logs: MemoryLogStore
    clock: AnyioClock
    deliveries: Deliveries
    runs: MemoryObjectSendStream[RunJob]
    failures: MemoryObjectReceiveStream[AttemptFailed]
    stopped: anyio.Event
    scope: anyio.CancelScope
    """The pool's own scope: cancelling it is what the supervisor does when the grace ends."""


@asynccontextmanager
async def running_pool(
    registry: TaskRegistry,
    *,
    concurrency: int = 3,
    lease: float = 15.0,
    progress_interval: float = 0.25,
    store: MemoryJobStore | None = None,
) -> AsyncIterator[Harness]:
    store, transport, bus, logs, clock = (
        store or MemoryJobStore(),
        MemoryTransport(),
        MemoryEventBus(),
        MemoryLogStore(),
        AnyioClock(),
    )
    runs_send, runs = anyio.create_memory_object_stream[RunJob](0)
    failures_send, failures = anyio.create_memory_object_stream[AttemptFailed](64)
    async with (
        runs_send,
        runs,
        failures_send,
        failures,
        transport.consume(["default"], prefetch=64) as deliveries,
    ):
        shipper = LogShipper(logs=logs)
        pool = ExecutorPool(
            runs=runs,
            failures=failures_send,
            registry=registry,
            recorder=Recorder(store=store, transport=transport, events=bus, clock=clock),
            inflight=InFlight(
                store=store,
                events=bus,
                clock=clock,
                lease=lease,
                progress_interval=progress_interval,
            ),
            events=bus,
            after_attempt=[shipper.ship],
            clock=clock,
            concurrency=concurrency,
        )
        h = Harness(
            pool=pool,
            store=store,
            transport=transport,
            bus=bus,
            logs=logs,
            clock=clock,
            deliveries=deliveries,
            runs=runs_send,
            failures=failures,
            stopped=anyio.Event(),
            scope=anyio.CancelScope(),
        )

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with h.scope:
                await pool.run(task_status=task_status)
            h.stopped.set()

        try:
            async with anyio.create_task_group() as tg:
                await tg.start(shipper.run)
                await tg.start(run)
                yield h
                tg.cancel_scope.cancel()
        finally:
            shipper.close()


async def claim(
    h: Harness,
    task: str,
    *,
    payload: dict[str, Any] | None = None,
    timeout: float | None = None,
    max_attempts: int = 3,
) -> RunJob:
    """Store, publish, receive and claim one job, as ingest and the dispatcher would."""
    now = h.clock.now()
    job = Job(
        id=str(uuid.uuid4()),
        task=task,
        payload=payload or {},
        timeout=timeout,
        max_attempts=max_attempts,
        created_at=now,
        updated_at=now,
    )
    await h.store.insert([job], now=now)
    await h.transport.publish([JobMessage(job_id=job.id, task=task, queue="default")])
    delivery = h.deliveries.receive_nowait()
    message = decode(delivery.body)
    assert isinstance(message, JobMessage)
    assert message.job_id == job.id
    (claimed,) = await h.store.claim(
        [job.id], owner="worker-1", now=now, lease_until=now + h.pool.inflight.lease
    )
    return RunJob(job=claimed, delivery_tag=delivery.tag)


async def run_until(h: Harness, task: str, entered: anyio.Event) -> RunJob:
    """Claim a job of ``task``, hand it to the pool and wait until the task set ``entered``."""
    run = await claim(h, task)
    await h.runs.send(run)
    with anyio.fail_after(5):
        await entered.wait()
    return run


async def next_event(events: ObjectReceiveStream[Event], kind: type[E], job_id: str) -> E:
    with anyio.fail_after(5):
        async for event in events:
            if isinstance(event, kind) and getattr(event, "job_id", None) == job_id:
                return event
    raise AssertionError("the event bus closed")


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


async def next_failure(h: Harness) -> AttemptFailed:
    with anyio.fail_after(5):
        return await h.failures.receive()


# ------------------------------------------------------------------ outcomes


async def test_success_is_stored_acked_and_announced_with_the_result() -> None:
    registry = TaskRegistry()

    @registry.task(name="double")
    async def double(payload: dict[str, Any], ctx: JobContext) -> dict[str, int]:
        await anyio.lowlevel.checkpoint()
        return {"n": payload["n"] * 2}

    async with running_pool(registry) as h, h.bus.subscribe() as events:
        run = await claim(h, "double", payload={"n": 21})
        await h.runs.send(run)
        event = await next_event(events, JobSucceeded, run.job.id)
        assert event.result == {"n": 42}
        assert event.attempt == 1
        job = h.store.jobs[run.job.id]
        assert job.status is JobStatus.COMPLETED
        assert job.result == {"n": 42}
        assert job.lease_owner is None
        assert h.transport.unsettled() == 0
        await wait_until(lambda: h.pool.statistics().finished == 1)


async def test_the_success_event_carries_no_tag_no_lines_and_a_large_result_is_omitted() -> None:
    registry = TaskRegistry()

    @registry.task(name="sized")
    async def sized(payload: dict[str, Any], ctx: JobContext) -> str:
        ctx.log.info("working")
        return "x" * payload["n"]

    async with running_pool(registry) as h, h.bus.subscribe() as events:
        small = await claim(h, "sized", payload={"n": EVENT_RESULT_BYTES - 2})  # + 2 quotes
        await h.runs.send(small)
        event = await next_event(events, JobSucceeded, small.job.id)
        assert (event.result, event.result_omitted) == ("x" * (EVENT_RESULT_BYTES - 2), False)
        assert not hasattr(event, "delivery_tag")
        assert not hasattr(event, "log_lines")
        large = await claim(h, "sized", payload={"n": EVENT_RESULT_BYTES - 1})
        await h.runs.send(large)
        event = await next_event(events, JobSucceeded, large.job.id)
        assert (event.result, event.result_omitted) == (None, True)
        # The record keeps the whole result, and the log lines went to the log store
        assert h.store.jobs[large.job.id].result == "x" * (EVENT_RESULT_BYTES - 1)
        with anyio.fail_after(5):
            while not await h.logs.read(large.job.id):  # noqa: ASYNC110 - no event to wait on
                await anyio.sleep(0.005)


async def test_an_exception_becomes_a_job_failed_for_the_retrier_and_nothing_is_acked() -> None:
    registry = TaskRegistry()

    class BadInput(ValueError):
        pass

    @registry.task(name="boom")
    async def boom(payload: dict[str, Any], ctx: JobContext) -> None:
        await anyio.lowlevel.checkpoint()
        raise BadInput("bad input")

    async with running_pool(registry) as h, h.bus.subscribe() as events:
        run = await claim(h, "boom")
        await h.runs.send(run)
        failed = await next_failure(h)
        assert failed.job_id == run.job.id
        assert failed.attempt == 1
        assert failed.max_attempts == 3
        assert failed.delivery_tag == run.delivery_tag
        assert failed.error.code == "task_error"
        assert failed.error.message == "bad input"
        assert "BadInput" in failed.error_types
        assert "ValueError" in failed.error_types
        assert failed.retryable is True
        assert failed.retry_delay is None
        # The retrier records it: the executor neither writes, acks nor announces a failure
        # (the public JobFailed, with will_retry, follows once the retrier has decided)
        await anyio.sleep(0.01)
        assert not [e for e in pending_events(events) if isinstance(e, JobFailed)]
        assert h.store.jobs[run.job.id].status is JobStatus.IN_PROGRESS
        assert h.transport.unsettled() == 1


async def test_retry_asks_for_its_delay() -> None:
    registry = TaskRegistry()

    @registry.task(name="later")
    async def later(payload: dict[str, Any], ctx: JobContext) -> None:
        raise Retry(delay=7)

    async with running_pool(registry) as h:
        run = await claim(h, "later")
        await h.runs.send(run)
        failed = await next_failure(h)
        assert failed.error.code == "retry_requested"
        assert failed.retry_delay == 7
        assert failed.retryable is True
        assert h.transport.unsettled() == 1


async def test_an_attempt_past_its_timeout_fails_with_code_timeout() -> None:
    registry = TaskRegistry()
    finished = anyio.Event()

    @registry.task(name="slow")
    async def slow(payload: dict[str, Any], ctx: JobContext) -> None:
        try:
            await anyio.sleep(10)
        finally:
            finished.set()

    async with running_pool(registry) as h:
        run = await claim(h, "slow", timeout=0.05)
        started = anyio.current_time()
        await h.runs.send(run)
        failed = await next_failure(h)
        assert failed.error.code == "timeout"
        assert failed.retryable is True
        assert anyio.current_time() - started < 5
        assert finished.is_set()
        assert h.store.jobs[run.job.id].status is JobStatus.IN_PROGRESS


async def test_a_sync_task_runs_in_a_worker_thread_and_reports_progress() -> None:
    registry = TaskRegistry()
    gate = threading.Event()
    seen: dict[str, Any] = {}

    @registry.task(name="crunch")
    def crunch(payload: dict[str, Any], ctx: JobContext) -> int:
        seen["thread"] = threading.current_thread()
        ctx.progress(40, "almost")
        assert gate.wait(5), "the test never opened the gate"
        return 7

    try:
        async with (
            running_pool(registry, progress_interval=0.01) as h,
            h.bus.subscribe() as events,
        ):
            run = await claim(h, "crunch")
            await h.runs.send(run)
            # Progress reported from the thread is written while the task still runs
            progressed = await next_event(events, JobProgressed, run.job.id)
            assert progressed.percent == 40
            job = h.store.jobs[run.job.id]
            assert job.status is JobStatus.IN_PROGRESS
            assert (job.progress, job.progress_message) == (40, "almost")
            gate.set()
            succeeded = await next_event(events, JobSucceeded, run.job.id)
            assert succeeded.result == 7
            assert h.store.jobs[run.job.id].status is JobStatus.COMPLETED
            assert seen["thread"] is not threading.main_thread()
            assert seen["thread"] is not threading.current_thread()
    finally:
        gate.set()


async def test_an_unknown_task_fails_for_good() -> None:
    async with running_pool(TaskRegistry()) as h:
        run = await claim(h, "nope")
        await h.runs.send(run)
        failed = await next_failure(h)
        assert failed.error.code == "unknown_task"
        assert failed.retryable is False
        assert h.transport.unsettled() == 1


async def test_a_result_that_is_not_json_fails_for_good() -> None:
    registry = TaskRegistry()

    @registry.task(name="opaque")
    async def opaque(payload: dict[str, Any], ctx: JobContext) -> object:
        return object()

    async with running_pool(registry) as h:
        run = await claim(h, "opaque")
        await h.runs.send(run)
        failed = await next_failure(h)
        assert failed.error.code == "result_not_serializable"
        assert failed.retryable is False
        job = h.store.jobs[run.job.id]
        assert job.status is JobStatus.IN_PROGRESS
        assert job.result is None


# ------------------------------------------------------------------ cancel


async def test_cancel_stops_a_running_attempt_and_stores_it_cancelled() -> None:
    registry = TaskRegistry()
    running = anyio.Event()
    cleaned_up = anyio.Event()

    @registry.task(name="forever")
    async def forever(payload: dict[str, Any], ctx: JobContext) -> None:
        running.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up.set()

    async with running_pool(registry) as h, h.bus.subscribe() as events:
        run = await run_until(h, "forever", running)
        assert h.pool.cancel(run.job.id) is True
        cancelled = await next_event(events, JobCancelled, run.job.id)
        assert cancelled.attempt == 1
        assert cleaned_up.is_set()
        assert h.store.jobs[run.job.id].status is JobStatus.CANCELLED
        assert h.transport.unsettled() == 0
        assert h.failures.statistics().current_buffer_used == 0


async def test_cancel_before_start_cancels_without_running_the_body() -> None:
    registry = TaskRegistry()
    entered: list[str] = []

    @registry.task(name="side_effect")
    async def side_effect(payload: dict[str, Any], ctx: JobContext) -> None:
        entered.append(ctx.job_id)  # a side effect before the task's first await
        await anyio.lowlevel.checkpoint()

    async with running_pool(registry) as h, h.bus.subscribe() as events:
        run = await claim(h, "side_effect")
        assert h.pool.cancel(run.job.id) is False  # not running here yet: remembered
        await h.runs.send(run)
        await next_event(events, JobCancelled, run.job.id)
        assert h.store.jobs[run.job.id].status is JobStatus.CANCELLED
        assert h.transport.unsettled() == 0
        assert entered == [], "the body ran although the job was cancelled before it started"


# ------------------------------------------------------------------ capacity


async def test_at_most_concurrency_attempts_run_at_once() -> None:
    registry = TaskRegistry()
    gate = anyio.Event()
    state = {"now": 0, "max": 0, "started": 0}

    @registry.task(name="hold")
    async def hold(payload: dict[str, Any], ctx: JobContext) -> None:
        state["now"] += 1
        state["started"] += 1
        state["max"] = max(state["max"], state["now"])
        try:
            await gate.wait()
        finally:
            state["now"] -= 1

    async with running_pool(registry, concurrency=3) as h, anyio.create_task_group() as tg:
        runs = [await claim(h, "hold") for _ in range(4)]

        async def feed() -> None:
            for run in runs:
                await h.runs.send(run)

        tg.start_soon(feed)
        await wait_until(lambda: state["now"] == 3)
        await anyio.sleep(0.05)
        # Then: three run, the fourth waits for a free executor
        assert state["started"] == 3
        assert h.pool.statistics().busy == 3
        gate.set()
        await wait_until(
            lambda: all(h.store.jobs[r.job.id].status is JobStatus.COMPLETED for r in runs)
        )
        assert state["started"] == 4
        assert state["max"] == 3
        assert h.transport.unsettled() == 0


# ------------------------------------------------------------------ lease fencing


async def take_over(h: Harness, job_id: str) -> Job:
    """Another worker takes the job over: its lease is recovered, then it is claimed again."""
    far = h.clock.now() + 1000
    recovered = await h.store.recover_expired(now=far, limit=10)
    assert [j.id for j in recovered.requeued] == [job_id]
    (again,) = await h.store.claim(
        [job_id], owner="worker-2", now=h.clock.now(), lease_until=far + 1000
    )
    assert again.attempts == 2
    return again


async def test_a_lost_lease_cancels_the_stale_attempt_and_leaves_the_new_one_alone() -> None:
    registry = TaskRegistry()
    running = anyio.Event()
    cleaned_up = anyio.Event()

    @registry.task(name="long")
    async def long(payload: dict[str, Any], ctx: JobContext) -> None:
        running.set()
        try:
            await anyio.sleep(10)
        finally:
            cleaned_up.set()

    async with running_pool(registry, lease=0.3) as h:
        run = await claim(h, "long")
        first_lease = run.job.lease_expires_at
        assert first_lease is not None
        await h.runs.send(run)
        with anyio.fail_after(5):
            await running.wait()
        # The renewer keeps the lease of attempt 1 alive
        await wait_until(lambda: (h.store.jobs[run.job.id].lease_expires_at or 0) > first_lease)

        # When: attempt 2 exists elsewhere
        again = await take_over(h, run.job.id)

        # Then: attempt 1 is cancelled; its failure is for the retrier, fenced at attempt 1
        failed = await next_failure(h)
        assert failed.error.code == "lease_lost"
        assert failed.attempt == 1
        assert cleaned_up.is_set()
        await anyio.sleep(0.35)  # a few more renewal rounds
        job = h.store.jobs[run.job.id]
        assert job.status is JobStatus.IN_PROGRESS
        assert job.attempts == 2
        assert job.lease_owner == "worker-2"
        assert job.lease_expires_at == again.lease_expires_at
        assert h.transport.unsettled() == 1


async def test_a_stale_attempt_cannot_store_its_outcome_over_the_new_attempt() -> None:
    registry = TaskRegistry()
    gate = anyio.Event()
    running = anyio.Event()

    @registry.task(name="late")
    async def late(payload: dict[str, Any], ctx: JobContext) -> str:
        running.set()
        await gate.wait()
        return "from attempt 1"

    async with running_pool(registry, lease=60) as h, h.bus.subscribe() as events:
        run = await run_until(h, "late", running)
        await take_over(h, run.job.id)
        gate.set()
        await wait_until(lambda: h.pool.statistics().finished == 1)
        assert h.pool.statistics().stale_outcomes == 1
        job = h.store.jobs[run.job.id]
        assert job.status is JobStatus.IN_PROGRESS
        assert job.attempts == 2
        assert job.result is None
        await anyio.sleep(0.01)
        assert not [e for e in pending_events(events) if isinstance(e, JobSucceeded)]


# ------------------------------------------------------------------ stop and logs


async def test_stop_waits_for_the_running_attempt_and_stores_its_outcome() -> None:
    registry = TaskRegistry()
    gate = anyio.Event()
    running = anyio.Event()

    @registry.task(name="finishing")
    async def finishing(payload: dict[str, Any], ctx: JobContext) -> str:
        running.set()
        await gate.wait()
        return "done"

    async with running_pool(registry) as h:
        run = await run_until(h, "finishing", running)
        await h.pool.stop()
        await anyio.sleep(0.05)
        assert not h.stopped.is_set()
        gate.set()
        with anyio.fail_after(5):
            await h.stopped.wait()
        job = h.store.jobs[run.job.id]
        assert job.status is JobStatus.COMPLETED
        assert job.result == "done"
        assert h.transport.unsettled() == 0


async def test_after_stop_no_new_attempt_is_started() -> None:
    """``stop``: "Take no new work". An idle executor must not start a RunJob sent after it."""
    registry = TaskRegistry()
    gate = anyio.Event()
    entered: list[str] = []

    @registry.task(name="hold")
    async def hold(payload: dict[str, Any], ctx: JobContext) -> None:
        entered.append(ctx.job_id)
        await gate.wait()

    async with running_pool(registry, concurrency=2) as h:
        first = await claim(h, "hold")
        await h.runs.send(first)
        await wait_until(lambda: len(entered) == 1)
        # When: the pool is told to stop while one attempt still runs (so run() has not
        # returned) and another RunJob arrives
        await h.pool.stop()
        late = await claim(h, "hold")
        with anyio.move_on_after(0.2):
            await h.runs.send(late)
        await anyio.sleep(0.05)
        gate.set()
        with anyio.fail_after(5):
            await h.stopped.wait()
        # Then: the attempt in flight finished; the late one never started
        assert h.store.jobs[first.job.id].status is JobStatus.COMPLETED
        assert entered == [first.job.id]
        assert h.store.jobs[late.job.id].status is not JobStatus.COMPLETED


async def test_an_async_attempt_cut_by_the_end_of_the_grace_is_given_back_unburned() -> None:
    registry = TaskRegistry()
    entered = anyio.Event()
    finalized: list[str] = []

    @registry.task(name="endless")
    async def endless(payload: dict[str, Any], ctx: JobContext) -> None:
        try:
            entered.set()
            await anyio.sleep_forever()
        finally:
            finalized.append(ctx.job_id)

    async with running_pool(registry) as h:
        run = await run_until(h, "endless", entered)
        await h.pool.stop()
        h.scope.cancel()  # the grace ended
        with anyio.fail_after(5):
            await h.stopped.wait()
        job = h.store.jobs[run.job.id]
        assert (job.status, job.attempts) == (JobStatus.PENDING, 0)  # the attempt given back
        assert finalized == [run.job.id]
        redelivered = h.deliveries.receive_nowait()  # requeued for the next worker
        assert decode(redelivered.body).job_id == run.job.id  # type: ignore[union-attr]
        assert h.pool.statistics().released == 1


async def test_an_outcome_reached_as_the_pool_is_cancelled_is_stored_not_lost() -> None:
    """The task returns at the moment the grace ends (it shielded its last step): its result
    is stored and its delivery acked, not left to a lease that would run it again."""
    registry = TaskRegistry()
    entered, gate = anyio.Event(), anyio.Event()

    @registry.task(name="last_step")
    async def last_step(payload: dict[str, Any], ctx: JobContext) -> str:
        with anyio.CancelScope(shield=True):
            entered.set()
            await gate.wait()
        return "kept"

    async with running_pool(registry) as h:
        run = await run_until(h, "last_step", entered)
        await h.pool.stop()
        h.scope.cancel()
        gate.set()
        with anyio.fail_after(5):
            await h.stopped.wait()
        job = h.store.jobs[run.job.id]
        assert (job.status, job.result, job.attempts) == (JobStatus.COMPLETED, "kept", 1)
        assert h.transport.unsettled() == 0


class DownStore(MemoryJobStore):
    """The twin with an outage switch: while ``down``, every ``settle`` raises StoreError."""

    down = False

    async def settle(self, changes: Sequence[Change], *, now: float) -> list[Job | None]:
        if self.down:
            raise StoreError("database unreachable (test outage)")
        return await super().settle(changes, now=now)


async def test_an_outcome_is_held_while_the_store_is_down_and_stored_once_it_is_back() -> None:
    registry = TaskRegistry()

    @registry.task(name="quick")
    async def quick(payload: dict[str, Any], ctx: JobContext) -> str:
        return "ok"

    store = DownStore()
    async with running_pool(registry, store=store) as h:
        run = await claim(h, "quick")
        store.down = True
        await h.runs.send(run)
        await anyio.sleep(0.5)  # several retries of the outcome write
        job = h.store.jobs[run.job.id]
        assert (job.status, job.attempts) == (JobStatus.IN_PROGRESS, 1)  # held, not failed
        assert h.transport.unsettled() == 1  # not acked before it is stored
        store.down = False
        await wait_until(lambda: h.store.jobs[run.job.id].status is JobStatus.COMPLETED)
        assert h.store.jobs[run.job.id].attempts == 1  # the outage cost no attempt
        await wait_until(lambda: h.transport.unsettled() == 0)


async def test_a_shutdown_with_the_store_down_still_stops_and_leaves_the_job_to_its_lease() -> None:
    registry = TaskRegistry()
    entered = anyio.Event()

    @registry.task(name="endless")
    async def endless(payload: dict[str, Any], ctx: JobContext) -> None:
        entered.set()
        await anyio.sleep_forever()

    store = DownStore()
    async with running_pool(registry, store=store) as h:
        run = await run_until(h, "endless", entered)
        store.down = True
        await h.pool.stop()
        h.scope.cancel()
        with anyio.fail_after(5):
            await h.stopped.wait()
        job = h.store.jobs[run.job.id]
        assert (job.status, job.lease_owner) == (JobStatus.IN_PROGRESS, "worker-1")
        assert h.pool.statistics().released == 0


def _gated_sync_task(registry: TaskRegistry, *, cooperative: bool = False) -> Any:
    """A `def` task that blocks until its gate opens (or, cooperative, until cancelled)."""
    state = type("State", (), {})()
    state.gate = threading.Event()
    state.entered = threading.Event()
    state.calls = []

    @registry.task(name="blocking")
    def blocking(payload: dict[str, Any], ctx: JobContext) -> str:
        state.calls.append(ctx.attempt)
        state.entered.set()
        while not state.gate.wait(0.01):
            if cooperative and ctx.cancelled:
                raise RuntimeError("stopping: the attempt was cancelled")
        return "finished"

    return state


async def _cut(h: Harness, state: Any, *, force: bool = False) -> RunJob:
    run = await claim(h, "blocking")
    await h.runs.send(run)
    await wait_until(state.entered.is_set)
    await h.pool.stop()
    if force:
        h.pool.force()
    h.scope.cancel()
    return run


async def test_a_sync_attempt_cut_by_the_grace_is_waited_for_and_completes_once() -> None:
    """A thread cannot be cancelled: giving the job back while it still runs would run the
    job twice under one attempt number. The pool waits for it and stores what it returned."""
    registry = TaskRegistry()
    state = _gated_sync_task(registry)
    async with running_pool(registry) as h:
        run = await _cut(h, state)
        await anyio.sleep(0.2)
        assert not h.stopped.is_set()  # still waiting for the thread
        assert h.store.jobs[run.job.id].status is JobStatus.IN_PROGRESS
        state.gate.set()
        with anyio.fail_after(5):
            await h.stopped.wait()
        job = h.store.jobs[run.job.id]
        assert (job.status, job.result, job.attempts) == (JobStatus.COMPLETED, "finished", 1)
        assert state.calls == [1]
        assert h.transport.unsettled() == 0
        assert h.pool.statistics().released == 0


async def test_a_sync_attempt_that_stops_on_ctx_cancelled_is_given_back_unburned() -> None:
    registry = TaskRegistry()
    state = _gated_sync_task(registry, cooperative=True)
    async with running_pool(registry) as h:
        run = await _cut(h, state)
        with anyio.fail_after(5):
            await h.stopped.wait()
        job = h.store.jobs[run.job.id]
        assert (job.status, job.attempts) == (JobStatus.PENDING, 0)
        assert h.pool.statistics().released == 1


async def test_a_forced_stop_leaves_a_running_sync_attempt_to_its_lease() -> None:
    """A second signal does not wait for the thread, and does not give the job back either
    (the thread still runs it): the job stays claimed until its lease expires."""
    registry = TaskRegistry()
    state = _gated_sync_task(registry)
    async with running_pool(registry) as h:
        try:
            run = await _cut(h, state, force=True)
            with anyio.fail_after(5):
                await h.stopped.wait()
            job = h.store.jobs[run.job.id]
            assert (job.status, job.attempts) == (JobStatus.IN_PROGRESS, 1)
            assert job.lease_expires_at is not None
            assert h.pool.statistics().released == 0
        finally:
            state.gate.set()


async def test_lines_logged_through_ctx_log_reach_the_log_store() -> None:
    registry = TaskRegistry()

    @registry.task(name="chatty")
    async def chatty(payload: dict[str, Any], ctx: JobContext) -> None:
        ctx.log.info("step_done", step=1)
        ctx.log.warning("almost_there")

    async with running_pool(registry) as h, h.bus.subscribe() as events:
        run = await claim(h, "chatty")
        await h.runs.send(run)
        await next_event(events, JobSucceeded, run.job.id)
        with anyio.fail_after(5):  # the log shipper writes on its own time
            while (data := await h.logs.read(run.job.id)) is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        records = joblog.decode(data)
        assert [(r.level, r.message, r.fields, r.source) for r in records[:2]] == [
            ("info", "step_done", {"step": 1}, "task"),
            ("warning", "almost_there", {}, "task"),
        ]
        assert records[-1].message.startswith("attempt 1 completed in ")
        assert {r.attempt for r in records} == {1}
