"""Reaper alone: expired leases recovered or buried, live ones left alone, retention purges."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from actors.reaper import Reaper
from taskflow.clock import AnyioClock
from taskflow.codec import decode
from taskflow.jobs import Job, JobError, JobStatus
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryLogStore, MemoryTransport
from taskflow.messages import Event, JobDeadLettered, JobMessage
from tests.conftest import mock_clock_backend

pytestmark = pytest.mark.anyio

DAY = 86400.0
BOOM = JobError(code="task_error", message="boom", reason="max_attempts_exceeded")


@dataclass(kw_only=True)
class Harness:
    reaper: Reaper
    store: MemoryJobStore
    transport: MemoryTransport
    bus: MemoryEventBus
    logs: MemoryLogStore
    clock: AnyioClock


def make_harness(**config: Any) -> Harness:
    store, transport, bus, logs, clock = (
        MemoryJobStore(),
        MemoryTransport(),
        MemoryEventBus(),
        MemoryLogStore(),
        AnyioClock(),
    )
    reaper = Reaper(store=store, transport=transport, events=bus, logs=logs, clock=clock, **config)
    return Harness(reaper=reaper, store=store, transport=transport, bus=bus, logs=logs, clock=clock)


@asynccontextmanager
async def running(h: Harness) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        await tg.start(h.reaper.run)
        yield
        tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110 - the twins expose no event to wait on
            await anyio.sleep(0.001)


def running_job(h: Harness, job_id: str, *, attempts: int, lease_in: float) -> Job:
    now = h.clock.now()
    return Job(
        id=job_id,
        task="echo",
        status=JobStatus.IN_PROGRESS,
        attempts=attempts,
        max_attempts=3,
        lease_owner="gone-worker",
        lease_expires_at=now + lease_in,
        created_at=now - 60,
        updated_at=now - 30,
        started_at=now - 30,
    )


def finished_job(h: Harness, job_id: str, status: JobStatus, *, age: float) -> Job:
    now = h.clock.now()
    return Job(
        id=job_id,
        task="echo",
        status=status,
        attempts=1,
        error=BOOM if status is JobStatus.FAILED else None,
        created_at=now - age - 1,
        updated_at=now - age,
        finished_at=now - age,
    )


async def drain(h: Harness) -> list[str]:
    ids = []
    async with h.transport.consume(["default"], prefetch=1000) as deliveries:
        while True:
            try:
                delivery = deliveries.receive_nowait()
            except anyio.WouldBlock:
                return ids
            message = decode(delivery.body)
            assert isinstance(message, JobMessage)
            ids.append(message.job_id)


def dead_lettered(events: list[Event]) -> list[JobDeadLettered]:
    return [e for e in events if isinstance(e, JobDeadLettered)]


# ------------------------------------------------------------------ leases


async def test_expired_leases_are_requeued_or_buried_and_live_ones_left_alone() -> None:
    h = make_harness(interval=3600.0)
    lost = running_job(h, "lost", attempts=1, lease_in=-1)
    last = running_job(h, "last", attempts=3, lease_in=-1)
    live = running_job(h, "live", attempts=1, lease_in=100)
    await h.store.insert([lost, last, live], now=h.clock.now())

    async with h.bus.subscribe() as events, running(h):
        await wait_until(lambda: h.reaper.statistics().sweeps == 1)

        # The lost attempt counts; the job runs again
        requeued = h.store.jobs["lost"]
        assert requeued.status is JobStatus.PENDING
        assert requeued.attempts == 1
        assert requeued.error is not None
        assert requeued.error.code == "worker_lost"
        assert requeued.lease_owner is None
        assert await drain(h) == ["lost"]

        # No attempts left: buried, announced as a dead letter, not published
        buried = h.store.jobs["last"]
        assert buried.status is JobStatus.FAILED
        assert buried.error is not None
        assert buried.error.code == "worker_lost"
        seen = []
        with anyio.fail_after(5):
            while not dead_lettered(seen):
                seen.append(await events.receive())
        (event,) = dead_lettered(seen)
        assert (event.job_id, event.attempt, event.error) == ("last", 3, buried.error)

        # A live lease is untouched
        assert h.store.jobs["live"] == live
        stats = h.reaper.statistics()
        assert (stats.recovered, stats.buried) == (1, 1)


async def test_a_job_buried_for_a_lost_last_attempt_says_why_it_is_a_dead_letter() -> None:
    """Dead letters carry their reason (JobError.reason); the DLQ keeper sets it, so must this."""
    h = make_harness(interval=3600.0)
    await h.store.insert([running_job(h, "last", attempts=3, lease_in=-1)], now=h.clock.now())
    async with running(h):
        await wait_until(lambda: h.reaper.statistics().sweeps == 1)
    buried = h.store.jobs["last"]
    assert buried.status is JobStatus.FAILED
    assert buried.error is not None
    assert buried.error.reason == "max_attempts_exceeded"


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_a_lease_is_recovered_at_the_first_sweep_after_it_expired() -> None:
    h = make_harness(interval=5.0)
    await h.store.insert([running_job(h, "j", attempts=1, lease_in=7)], now=h.clock.now())
    async with running(h):
        await anyio.sleep(9.9)  # sweeps at 0 and 5 s: the lease (7 s) was still live
        assert h.reaper.statistics().sweeps == 2
        assert h.store.jobs["j"].status is JobStatus.IN_PROGRESS
        await anyio.sleep(0.2)  # the sweep at 10 s recovers it
        assert h.reaper.statistics().sweeps == 3
        assert h.store.jobs["j"].status is JobStatus.PENDING
        assert h.transport.published == 1


# ------------------------------------------------------------------ retention


async def test_purge_deletes_expired_terminal_jobs_and_their_logs_and_keeps_the_rest() -> None:
    h = make_harness(interval=3600.0, retention_completed=1 * DAY, retention_failed=7 * DAY)
    jobs = [
        finished_job(h, "old-completed", JobStatus.COMPLETED, age=2 * DAY),
        finished_job(h, "old-cancelled", JobStatus.CANCELLED, age=2 * DAY),
        finished_job(h, "old-failed", JobStatus.FAILED, age=8 * DAY),
        finished_job(h, "new-completed", JobStatus.COMPLETED, age=0.5 * DAY),
        # Older than the completed retention, younger than the failed one
        finished_job(h, "new-failed", JobStatus.FAILED, age=2 * DAY),
        running_job(h, "active", attempts=1, lease_in=100),
    ]
    await h.store.insert(jobs, now=h.clock.now())
    for job in jobs:
        await h.logs.append({job.id: f"line of {job.id}\n".encode()})

    async with running(h):
        await wait_until(lambda: h.reaper.statistics().sweeps == 1)

    doomed = {"old-completed", "old-cancelled", "old-failed"}
    kept = {"new-completed", "new-failed", "active"}
    assert set(h.store.jobs) == kept
    for job_id in doomed:
        assert await h.logs.read(job_id) is None, job_id
    for job_id in kept:
        assert await h.logs.read(job_id) == f"line of {job_id}\n".encode()
    assert h.reaper.statistics().purged == 3


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_a_completed_job_is_purged_at_the_first_sweep_past_its_retention() -> None:
    h = make_harness(interval=60.0, retention_completed=100.0, retention_failed=1000.0)
    await h.store.insert([finished_job(h, "done", JobStatus.COMPLETED, age=0)], now=h.clock.now())
    async with running(h):
        await anyio.sleep(61)  # sweeps at 0 and 60 s: younger than 100 s
        assert "done" in h.store.jobs
        await anyio.sleep(60)  # the sweep at 120 s
        assert "done" not in h.store.jobs


# ------------------------------------------------------------------ outbox


async def test_a_pending_job_whose_publish_was_lost_is_published_again() -> None:
    """Invariant 1 (ARCHITECTURE.md): rows the transport never confirmed are re-published by
    the reaper's outbox sweep. Here ingest stored the job an hour ago and its publish failed."""
    h = make_harness(interval=3600.0)
    now = h.clock.now()
    orphan = Job(id="orphan", task="echo", created_at=now - 3600, updated_at=now - 3600)
    await h.store.insert([orphan], now=now - 3600)
    async with running(h):
        await wait_until(lambda: h.reaper.statistics().sweeps == 1)
    assert await drain(h) == ["orphan"]
