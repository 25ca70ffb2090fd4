"""Dispatcher alone: deliveries -> batched fenced claims -> RunJob; skips, duplicates, poison."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from actors.dispatcher import Dispatcher
from taskflow.clock import AnyioClock
from taskflow.codec import encode
from taskflow.jobs import Job, JobStatus
from taskflow.memory import MemoryJobStore, MemoryTransport
from taskflow.messages import CancelRequested, JobMessage, RunJob

pytestmark = pytest.mark.anyio

LEASE = 15.0


@dataclass(kw_only=True)
class Harness:
    dispatcher: Dispatcher
    store: MemoryJobStore
    transport: MemoryTransport
    clock: AnyioClock
    runs: MemoryObjectReceiveStream[RunJob]
    stopped: anyio.Event


@asynccontextmanager
async def harness(*, prefetch: int = 64) -> AsyncIterator[Harness]:
    """The twins and a dispatcher that is not started yet (``start`` it in the test)."""
    store, transport, clock = MemoryJobStore(), MemoryTransport(), AnyioClock()
    runs_send, runs = anyio.create_memory_object_stream[RunJob](64)
    async with (
        runs_send,
        runs,
        transport.consume(["default"], prefetch=prefetch) as deliveries,
    ):
        dispatcher = Dispatcher(
            deliveries=deliveries,
            runs=runs_send,
            store=store,
            queries=store,
            transport=transport,
            clock=clock,
            owner="worker-1",
            lease=LEASE,
        )
        yield Harness(
            dispatcher=dispatcher,
            store=store,
            transport=transport,
            clock=clock,
            runs=runs,
            stopped=anyio.Event(),
        )


@asynccontextmanager
async def started(h: Harness) -> AsyncIterator[None]:
    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        await h.dispatcher.run(task_status=task_status)
        h.stopped.set()

    async with anyio.create_task_group() as tg:
        await tg.start(run)
        yield
        tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110 - the twins expose no event to wait on
            await anyio.sleep(0.001)


async def add_job(
    h: Harness, job_id: str, *, status: JobStatus = JobStatus.PENDING, publish: bool = True
) -> Job:
    now = h.clock.now()
    job = Job(id=job_id, task="echo", status=status, created_at=now, updated_at=now)
    await h.store.insert([job], now=now)
    if publish:
        await h.transport.publish([JobMessage(job_id=job_id, task="echo", queue="default")])
    return job


def nothing_on(runs: MemoryObjectReceiveStream[RunJob]) -> bool:
    try:
        runs.receive_nowait()
    except anyio.WouldBlock:
        return True
    return False


# ------------------------------------------------------------------ claim


async def test_a_pending_delivery_is_claimed_and_handed_over_with_its_tag() -> None:
    async with harness() as h:
        await add_job(h, "j1")
        before = h.clock.now()
        async with started(h):
            with anyio.fail_after(5):
                run = await h.runs.receive()
            after = h.clock.now()

            # Then: the job is claimed in the store, fenced by its first attempt
            stored = h.store.jobs["j1"]
            assert stored.status is JobStatus.IN_PROGRESS
            assert stored.attempts == 1
            assert stored.lease_owner == "worker-1"
            assert stored.lease_expires_at is not None
            assert before + LEASE <= stored.lease_expires_at <= after + LEASE
            # And: the RunJob carries the claimed job and the real delivery tag
            assert run.job == stored
            assert h.transport.unsettled() == 1
            await h.transport.ack([run.delivery_tag])
            assert h.transport.unsettled() == 0
            assert h.dispatcher.statistics().claimed == 1


async def test_a_batch_of_twenty_deliveries_is_claimed_in_few_store_calls() -> None:
    async with harness() as h:
        for i in range(20):
            await add_job(h, f"j{i}")
        async with started(h):
            with anyio.fail_after(5):
                runs = [await h.runs.receive() for _ in range(20)]
            assert {r.job.id for r in runs} == {f"j{i}" for i in range(20)}
            assert len({r.delivery_tag for r in runs}) == 20
            assert h.store.writes["claim"] <= 3, h.store.writes
            assert all(j.status is JobStatus.IN_PROGRESS for j in h.store.jobs.values())
            assert nothing_on(h.runs)


# ------------------------------------------------------------------ skips


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.FAILED])
async def test_a_delivery_of_a_finished_job_is_acked_and_not_run(status: JobStatus) -> None:
    async with harness() as h:
        await add_job(h, "done", status=status)
        async with started(h):
            await wait_until(lambda: h.dispatcher.statistics().skipped == 1)
            assert h.transport.unsettled() == 0
            assert h.transport.depth() == 0
            assert nothing_on(h.runs)
            job = h.store.jobs["done"]
            assert job.status is status
            assert job.attempts == 0


async def test_a_redelivery_of_a_job_whose_lease_is_live_is_not_run_twice() -> None:
    """Another worker holds the job under a live lease (its own delivery still open): a
    second delivery of it, e.g. republished by an outbox sweep, is acked and not run."""
    async with harness() as h:
        await add_job(h, "held")
        now = h.clock.now()
        (claimed,) = await h.store.claim(
            ["held"], owner="other-worker", now=now, lease_until=now + 15.0
        )
        async with started(h):
            await wait_until(lambda: h.dispatcher.statistics().skipped == 1)
            assert nothing_on(h.runs)
            job = h.store.jobs["held"]
            assert (job.status, job.attempts, job.lease_owner) == (
                JobStatus.IN_PROGRESS,
                claimed.attempts,
                "other-worker",
            )
            assert h.transport.unsettled() == 0


async def test_two_deliveries_of_one_job_in_a_batch_run_it_once() -> None:
    async with harness() as h:
        await add_job(h, "twice")
        await h.transport.publish([JobMessage(job_id="twice", task="echo", queue="default")])
        assert h.transport.depth() == 2
        async with started(h):
            with anyio.fail_after(5):
                run = await h.runs.receive()
            await wait_until(lambda: h.dispatcher.statistics().skipped == 1)
            assert run.job.id == "twice"
            assert h.store.writes["claim"] == 1  # one batch
            assert h.store.jobs["twice"].attempts == 1
            assert h.transport.unsettled() == 1  # only the delivery being run is open
            await anyio.sleep(0.01)
            assert nothing_on(h.runs)
            await h.transport.ack([run.delivery_tag])
            assert h.transport.unsettled() == 0


# ------------------------------------------------------------------ poison


async def test_poison_messages_are_dead_lettered_and_the_dispatcher_keeps_going() -> None:
    garbage = b"\x00\xffnot json at all"
    wrong_type = encode(CancelRequested(job_id="j1"))
    bad_shape = json.dumps({"type": "JobMessage", "body": {"job_id": 5}}).encode()
    async with harness() as h:
        for body in (garbage, wrong_type, bad_shape):
            h.transport.publish_raw("default", body)
        async with started(h):
            await wait_until(lambda: len(h.transport.dead_lettered) == 3)
            assert sorted(body for _, body in h.transport.dead_lettered) == sorted(
                [garbage, wrong_type, bad_shape]
            )
            assert h.transport.unsettled() == 0
            assert h.dispatcher.statistics().poison == 3
            # Each is kept with its reason, visible through the store (and the API)
            kept = await h.store.dead_messages()
            assert sorted(m.body.encode() for m in kept if m.body.isascii()) == sorted(
                [wrong_type, bad_shape]
            )
            assert all(m.reason.startswith("malformed_message") for m in kept)
            assert {m.queue for m in kept} == {"default"}

            # When: a good message follows
            await add_job(h, "good")
            with anyio.fail_after(5):
                run = await h.runs.receive()
            assert run.job.id == "good"
            assert h.store.jobs["good"].status is JobStatus.IN_PROGRESS


async def test_poison_in_the_same_batch_as_a_good_message_does_not_stop_it() -> None:
    async with harness() as h:
        h.transport.publish_raw("default", b"{}")
        await add_job(h, "good")
        async with started(h):
            with anyio.fail_after(5):
                run = await h.runs.receive()
            assert run.job.id == "good"
            assert h.transport.dead_lettered == [("default", b"{}")]


async def test_a_message_naming_no_stored_job_is_dead_lettered_with_the_reason() -> None:
    async with harness() as h:
        h.transport.publish_raw(
            "default", encode(JobMessage(job_id="ghost", task="echo", queue="default"))
        )
        async with started(h):
            await wait_until(lambda: len(h.transport.dead_lettered) == 1)
            (kept,) = await h.store.dead_messages()
            assert kept.reason == "unknown_job: no job 'ghost' is stored"
            assert h.transport.unsettled() == 0


# ------------------------------------------------------------------ stop


async def test_stop_makes_run_return_and_no_more_deliveries_are_taken() -> None:
    async with harness() as h, started(h):
        await add_job(h, "before")
        with anyio.fail_after(5):
            await h.runs.receive()
            await h.dispatcher.stop()
            await h.stopped.wait()
        # A delivery arriving after stop stays on the queue, unclaimed
        await add_job(h, "after")
        await anyio.sleep(0.01)
        assert h.store.jobs["after"].status is JobStatus.PENDING
        assert h.transport.depth() == 1
        assert nothing_on(h.runs)
