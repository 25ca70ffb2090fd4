"""End to end in memory: the whole tree through the embedding API, on asyncio and trio."""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from taskflow import JobContext, JobStatus, NewJob, Retry, RetryPolicy, TaskRegistry
from taskflow.errors import IdempotencyConflict, InvalidTransition, JobNotFound
from taskflow.testing import embedded
from tests.conftest import mock_clock_backend

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(base=0.01, cap=0.05)


def mixed_registry() -> tuple[TaskRegistry, dict[str, Any]]:
    registry = TaskRegistry()
    seen: dict[str, Any] = {"threads": set(), "runs": Counter()}

    @registry.task(name="ok", retry=FAST)
    async def ok(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        seen["runs"][ctx.job_id] += 1
        await anyio.lowlevel.checkpoint()
        return {"n": payload["n"]}

    @registry.task(name="flaky", max_attempts=5, retry=FAST)
    async def flaky(payload: dict[str, Any], ctx: JobContext) -> int:
        seen["runs"][ctx.job_id] += 1
        if ctx.attempt < payload["k"]:
            raise ConnectionError(f"attempt {ctx.attempt} of {payload['k']}")
        return ctx.attempt

    @registry.task(name="broken", max_attempts=3, retry=FAST)
    async def broken(payload: dict[str, Any], ctx: JobContext) -> None:
        seen["runs"][ctx.job_id] += 1
        raise RuntimeError("always broken")

    @registry.task(name="slow", max_attempts=2, timeout=0.05, retry=FAST)
    async def slow(payload: dict[str, Any], ctx: JobContext) -> None:
        seen["runs"][ctx.job_id] += 1
        await anyio.sleep(10)

    @registry.task(name="sync", retry=FAST)
    def sync(payload: dict[str, Any], ctx: JobContext) -> int:
        seen["runs"][ctx.job_id] += 1
        seen["threads"].add(threading.current_thread().name)
        ctx.progress(50)
        return sum(range(payload["n"]))

    return registry, seen


async def test_thousand_mixed_jobs_end_terminal_with_the_right_attempts() -> None:
    # Given 1,000 jobs: succeeding, flaky (succeed on attempt k), always failing, timing out, sync
    registry, seen = mixed_registry()
    rng = random.Random(7)
    plan: list[tuple[str, dict[str, Any]]] = []
    for n in range(1000):
        kind = rng.choice(["ok", "ok", "flaky", "broken", "slow", "sync"])
        payload = {"n": n, "k": rng.randint(1, 4)} if kind == "flaky" else {"n": n}
        plan.append((kind, payload))
    async with embedded(registry, concurrency=32, seed=1) as tf:
        with anyio.fail_after(60):
            ids = [await tf.submit(kind, payload) for kind, payload in plan]
            # When everything has run
            await tf.wait_idle()
        # Then every job is terminal with the attempt count its kind implies
        jobs = {job_id: await tf.get(job_id) for job_id in ids}
        for (kind, payload), job_id in zip(plan, ids, strict=True):
            job = jobs[job_id]
            assert job.status.terminal, job
            assert seen["runs"][job_id] == job.attempts, job
            if kind in ("ok", "sync"):
                assert (job.status, job.attempts) == (JobStatus.COMPLETED, 1)
            elif kind == "flaky":
                assert (job.status, job.attempts, job.result) == (
                    JobStatus.COMPLETED,
                    payload["k"],
                    payload["k"],
                )
            elif kind == "broken":
                assert (job.status, job.attempts, job.in_dlq) == (JobStatus.FAILED, 3, True)
                assert job.error is not None
                assert (job.error.code, job.error.reason) == ("task_error", "max_attempts_exceeded")
            else:  # slow
                assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
                assert job.error is not None and job.error.code == "timeout"
        kinds = Counter(kind for kind, _ in plan)
        dead = {j.id for j in tf.dead_letters()}
        assert len(dead) == kinds["broken"] + kinds["slow"]
        assert "MainThread" not in seen["threads"] and seen["threads"]
        sync_job = next(jobs[i] for (k, _), i in zip(plan, ids, strict=True) if k == "sync")
        assert sync_job.result == sum(range(sync_job.payload["n"]))
        # The metrics actor saw the same story
        totals = tf.metrics().totals
        assert totals.submitted == 1000
        assert totals.succeeded == kinds["ok"] + kinds["flaky"] + kinds["sync"]
        assert totals.dead_lettered == len(dead)


async def test_replay_brings_a_dead_letter_to_completed() -> None:
    registry = TaskRegistry()
    state = {"fixed": False}

    @registry.task(name="needs_fix", max_attempts=2, retry=FAST)
    async def needs_fix(payload: dict[str, Any], ctx: JobContext) -> str:
        if not state["fixed"]:
            raise ValueError("bad config")
        return "fixed"

    async with embedded(registry, concurrency=2) as tf:
        job_id = await tf.submit("needs_fix", {})
        dead = await tf.wait(job_id, timeout=10)
        assert dead.status is JobStatus.FAILED and dead.in_dlq and dead.attempts == 2
        assert [j.id for j in tf.dead_letters()] == [job_id]
        # When the cause is fixed and the dead letter replayed
        state["fixed"] = True
        replayed = await tf.replay(job_id)
        assert replayed is not None and replayed.replay_count == 1
        done = await tf.wait(job_id, timeout=10)
        # Then it completes, with its lineage kept
        assert (done.status, done.result, done.attempts) == (JobStatus.COMPLETED, "fixed", 1)
        assert done.replay_count == 1
        assert done.original_error is not None and done.original_error.message == "bad config"
        assert tf.dead_letters() == []
        assert await tf.replay(job_id) is None  # not a dead letter any more


async def test_cancel_stops_a_running_job_and_its_finally_runs() -> None:
    registry = TaskRegistry()
    started, cleaned = anyio.Event(), anyio.Event()

    @registry.task(name="forever")
    async def forever(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.set()

    async with embedded(registry, concurrency=2) as tf:
        job_id = await tf.submit("forever", {})
        with anyio.fail_after(5):
            await started.wait()
        job = await tf.cancel(job_id)
        assert job.status is JobStatus.IN_PROGRESS and job.cancel_requested
        done = await tf.wait(job_id, timeout=5)
        assert done.status is JobStatus.CANCELLED
        assert cleaned.is_set()
        with pytest.raises(InvalidTransition):
            await tf.cancel(job_id)
        with pytest.raises(JobNotFound):
            await tf.cancel("no-such-job")


async def test_cancel_a_pending_job_it_never_runs() -> None:
    registry = TaskRegistry()
    gate = anyio.Event()
    ran: list[str] = []

    @registry.task(name="blocker")
    async def blocker(payload: dict[str, Any], ctx: JobContext) -> None:
        await gate.wait()

    @registry.task(name="victim")
    async def victim(payload: dict[str, Any], ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    async with embedded(registry, concurrency=1) as tf:
        blocking = await tf.submit("blocker", {})
        victim_id = await tf.submit("victim", {})
        assert (await tf.get(victim_id)).status is JobStatus.PENDING
        cancelled = await tf.cancel(victim_id)
        assert cancelled.status is JobStatus.CANCELLED
        gate.set()
        await tf.wait(blocking, timeout=5)
        await tf.wait_idle(timeout=5)
        assert ran == []
        assert (await tf.get(victim_id)).status is JobStatus.CANCELLED


async def test_priorities_order_a_backlog() -> None:
    registry = TaskRegistry()
    gate = anyio.Event()
    order: list[int] = []

    @registry.task(name="blocker")
    async def blocker(payload: dict[str, Any], ctx: JobContext) -> None:
        await gate.wait()

    @registry.task(name="record")
    async def record(payload: dict[str, Any], ctx: JobContext) -> None:
        order.append(payload["p"])

    priorities = [3, 9, 0, 5, 7, 1, 9, 2, 8, 4, 6]
    async with embedded(registry, concurrency=1) as tf:
        await tf.submit("blocker", {})
        for p in priorities:
            await tf.submit("record", {"p": p}, priority=p)
        gate.set()
        await tf.wait_idle(timeout=10)
    assert order == sorted(priorities, reverse=True)


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_a_delayed_job_does_not_run_early() -> None:
    registry = TaskRegistry()
    ran_at: list[float] = []

    @registry.task(name="later")
    async def later(payload: dict[str, Any], ctx: JobContext) -> None:
        ran_at.append(anyio.current_time())

    async with embedded(registry, concurrency=2) as tf:
        t0 = anyio.current_time()
        job_id = await tf.submit("later", {}, delay=3600.0)
        await anyio.sleep(3599.0)
        assert (await tf.get(job_id)).status is JobStatus.SCHEDULED
        assert ran_at == []
        job = await tf.wait(job_id, timeout=7200)
        assert job.status is JobStatus.COMPLETED
        assert 3600.0 <= ran_at[0] - t0 < 3601.0


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_retry_with_an_explicit_delay_and_backoff_bounds() -> None:
    registry = TaskRegistry()
    starts: list[float] = []

    @registry.task(name="again", max_attempts=4, retry=RetryPolicy(base=10.0, cap=100.0))
    async def again(payload: dict[str, Any], ctx: JobContext) -> int:
        starts.append(anyio.current_time())
        if ctx.attempt == 1:
            raise Retry(delay=42.0)
        if ctx.attempt < 4:
            raise RuntimeError("transient")
        return ctx.attempt

    async with embedded(registry, concurrency=1, seed=3) as tf:
        job = await tf.wait(await tf.submit("again", {}), timeout=10_000)
    assert job.status is JobStatus.COMPLETED and job.attempts == 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert 42.0 <= gaps[0] < 42.0 + 1.0  # Retry(delay=42) honoured (plus promotion latency)
    assert 0.0 <= gaps[1] <= 20.0 + 1.0  # full jitter within base * 2 ** (2 - 1)
    assert 0.0 <= gaps[2] <= 40.0 + 1.0  # ... and base * 2 ** (3 - 1)


async def test_idempotency_key_returns_the_first_job() -> None:
    registry = TaskRegistry()

    @registry.task(name="echo")
    async def echo(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        return payload

    async with embedded(registry) as tf:
        first = await tf.submit("echo", {"a": 1}, idempotency_key="k-1")
        again = await tf.submit("echo", {"a": 1}, idempotency_key="k-1")
        assert again == first
        with pytest.raises(IdempotencyConflict):
            await tf.submit("echo", {"a": 2}, idempotency_key="k-1")
        await tf.wait_idle(timeout=5)
        assert len(tf.store.jobs) == 1


async def test_graceful_exit_lets_a_running_job_finish() -> None:
    registry = TaskRegistry()
    started = anyio.Event()

    @registry.task(name="short")
    async def short(payload: dict[str, Any], ctx: JobContext) -> str:
        started.set()
        await anyio.sleep(0.2)
        return "done"

    async with embedded(registry, shutdown_grace=5.0) as tf:
        job_id = await tf.submit("short", {})
        with anyio.fail_after(5):
            await started.wait()
    # The block exited while the job ran: the shutdown drained it instead of cancelling it.
    job = tf.store.get_nowait(job_id)
    assert (job.status, job.result) == (JobStatus.COMPLETED, "done")


@pytest.mark.parametrize("prefetch", [None, 16])
async def test_no_more_jobs_are_claimed_than_there_are_free_executors(
    prefetch: int | None,
) -> None:
    """The broker pushes deliveries ahead (prefetch > concurrency), but a job is claimed
    (in_progress, its lease running) only when an executor is free to run it."""
    registry = TaskRegistry()
    running = 0
    most_running = 0

    @registry.task(name="nap")
    async def nap(payload: dict[str, Any], ctx: JobContext) -> None:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        await anyio.sleep(0.02)
        running -= 1

    async with embedded(registry, concurrency=3, prefetch=prefetch) as tf:
        await tf.submit_many([NewJob(task="nap") for _ in range(40)])
        most_claimed = 0
        with anyio.fail_after(20):
            while True:
                counts = await tf.resources.queries.counts()
                most_claimed = max(most_claimed, counts.get(JobStatus.IN_PROGRESS, 0))
                if counts.get(JobStatus.COMPLETED, 0) == 40:
                    break
                await anyio.sleep(0.002)
    assert most_running == 3  # the pool was used in full
    assert 1 <= most_claimed <= 3, most_claimed
