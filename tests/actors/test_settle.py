"""The recording door: store the batch, then settle the deliveries, then announce what applied."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from actors.settle import Entry, Recorder, Settle
from taskflow.clock import AnyioClock
from taskflow.errors import NotStorable, StoreError
from taskflow.jobs import Job, JobStatus
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryTransport
from taskflow.messages import Event, JobMessage, JobSucceeded
from taskflow.ports import Change, Complete, Deliveries, Release

pytestmark = pytest.mark.anyio


class OrderedTransport(MemoryTransport):
    """The in-memory twin, noting when deliveries are settled (to check the door's order)."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    async def ack(self, tags: Sequence[int]) -> None:
        self.calls.append(f"ack {len(tags)}")
        await super().ack(tags)

    async def nack(self, tags: Sequence[int], *, requeue: bool) -> None:
        self.calls.append(f"nack {len(tags)} requeue={requeue}")
        await super().nack(tags, requeue=requeue)


class OrderedBus(MemoryEventBus):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    async def publish(self, events: Sequence[Event]) -> None:
        self.calls.append(f"publish {len(events)}")
        await super().publish(events)


class DownStore(MemoryJobStore):
    async def settle(self, changes: Sequence[Change], *, now: float) -> list[Job | None]:
        raise StoreError("the database is down")


@dataclass
class Harness:
    recorder: Recorder
    store: MemoryJobStore
    transport: OrderedTransport
    bus: OrderedBus
    deliveries: Deliveries
    calls: list[str]


@asynccontextmanager
async def harness(store: MemoryJobStore | None = None) -> AsyncIterator[Harness]:
    calls: list[str] = []
    store = store or MemoryJobStore()
    transport, bus, clock = OrderedTransport(calls), OrderedBus(calls), AnyioClock()
    recorder = Recorder(store=store, transport=transport, events=bus, clock=clock)
    async with transport.consume(["default"], prefetch=64) as deliveries:
        yield Harness(recorder, store, transport, bus, deliveries, calls)


async def running(h: Harness, n: int) -> list[tuple[Job, int]]:
    """``n`` claimed jobs, each with its delivery open."""
    jobs = [Job(id=str(uuid.uuid4()), task="t", created_at=1.0, updated_at=1.0) for _ in range(n)]
    await h.store.insert(jobs, now=1.0)
    await h.transport.publish([JobMessage(job_id=j.id, task="t", queue="default") for j in jobs])
    tags = [h.deliveries.receive_nowait().tag for _ in jobs]
    claimed = await h.store.claim([j.id for j in jobs], owner="w", now=1.0, lease_until=100.0)
    return list(zip(claimed, tags, strict=True))


def succeeded(job: Job) -> JobSucceeded:
    return JobSucceeded(
        job_id=job.id, task=job.task, attempt=job.attempts, at=2.0, started_at=1.5, created_at=1.0
    )


def complete(job: Job, tag: int, result: object = 1) -> Entry:
    change = Complete(job_id=job.id, attempt=job.attempts, result=result)
    return Entry(change, tag, (succeeded(job),))


async def test_the_batch_is_stored_then_acked_then_announced_in_one_call_each() -> None:
    async with harness() as h, h.bus.subscribe() as events:
        jobs = await running(h, 5)
        applied = await h.recorder.record([complete(j, t) for j, t in jobs], what="settle")
        assert all(isinstance(a, Job) and a.status is JobStatus.COMPLETED for a in applied)
        assert h.calls == ["ack 5", "publish 5"]
        assert h.transport.unsettled() == 0
        got = [events.receive_nowait() for _ in jobs]
        assert [e.job_id for e in got] == [j.id for j, _ in jobs]


async def test_a_fenced_out_change_is_acked_but_not_announced() -> None:
    async with harness() as h, h.bus.subscribe() as events:
        (job, tag), (other, other_tag) = await running(h, 2)
        change = Complete(job_id=job.id, attempt=job.attempts + 1, result=1)  # not its attempt
        stale = Entry(change, tag, (succeeded(job),))
        applied = await h.recorder.record([stale, complete(other, other_tag)], what="settle")
        assert applied[0] is None and isinstance(applied[1], Job)
        assert h.transport.unsettled() == 0
        assert [e.job_id for e in [events.receive_nowait()]] == [other.id]
        with pytest.raises(anyio.WouldBlock):
            events.receive_nowait()


async def test_a_refused_change_stays_unsettled_and_never_holds_up_its_neighbours() -> None:
    async with harness() as h, h.bus.subscribe() as events:
        jobs = await running(h, 7)
        entries = [complete(j, t) for j, t in jobs]
        entries[3] = complete(*jobs[3], result={"bad": "\x00"})
        applied = await h.recorder.record(entries, what="settle")
        assert isinstance(applied[3], NotStorable)
        assert sum(isinstance(a, Job) for a in applied) == 6
        assert h.transport.unsettled() == 1  # the refused one: the caller decides
        announced = {events.receive_nowait().job_id for _ in range(6)}
        assert jobs[3][0].id not in announced and len(announced) == 6


async def test_a_release_requeues_the_delivery_and_returns_the_job() -> None:
    async with harness() as h:
        ((job, tag),) = await running(h, 1)
        entry = Entry(Release(job_id=job.id, attempt=job.attempts), tag)
        await h.recorder.record([entry], what="release", settle=Settle.REQUEUE, patient=False)
        assert h.calls == ["nack 1 requeue=True"]
        assert h.store.jobs[job.id].status is JobStatus.PENDING
        assert h.transport.unsettled() == 0
        assert h.deliveries.receive_nowait().tag != tag  # back in the queue, a new delivery


async def test_an_impatient_record_raises_an_outage_and_settles_nothing() -> None:
    async with harness(DownStore()) as h:
        ((job, tag),) = await running(h, 1)
        entry = Entry(Release(job_id=job.id, attempt=job.attempts), tag)
        with pytest.raises(StoreError):
            await h.recorder.record([entry], what="release", settle=Settle.REQUEUE, patient=False)
        assert h.calls == [] and h.transport.unsettled() == 1  # left to the job's lease


async def test_a_patient_record_waits_out_an_outage_and_shows_it_as_retrying() -> None:
    class FlakyStore(MemoryJobStore):
        down = True

        async def settle(self, changes: Sequence[Change], *, now: float) -> list[Job | None]:
            if self.down:
                raise StoreError("the database is down")
            return await super().settle(changes, now=now)

    store = FlakyStore()
    async with harness(store) as h:
        ((job, tag),) = await running(h, 1)
        done = anyio.Event()

        async def record() -> None:
            await h.recorder.record([complete(job, tag)], what="settle")
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(record)
            with anyio.fail_after(5):
                while not h.recorder.retrying.stuck():  # noqa: ASYNC110 - polled on purpose
                    await anyio.sleep(0.01)
            assert not done.is_set() and h.transport.unsettled() == 1
            store.down = False
            with anyio.fail_after(5):
                await done.wait()
        assert h.calls == ["ack 1", "publish 1"]
        assert h.recorder.retrying.stuck() == []
