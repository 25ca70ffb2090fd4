"""Contract of the JobStore and JobQueries ports, run over every adapter.

Every test talks to the store only through the Protocol methods. Times are explicit
``now=`` arguments, so no test waits.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from taskflow.errors import IdempotencyConflict, InvalidTransition, JobNotFound, NotStorable
from taskflow.jobs import Job, JobError, JobStatus
from taskflow.ports.store import (
    Bury,
    Change,
    Complete,
    DeadMessage,
    Inserted,
    JobQuery,
    MarkCancelled,
    Progress,
    Recovered,
    Release,
    Renew,
    Reschedule,
)
from tests.contract.conftest import Store

pytestmark = pytest.mark.anyio

T = 1_700_000_000.0
"""The tests' "now": whole seconds, exact in every adapter's time type."""

BOOM = JobError(code="task_error", message="boom", type="ValueError")
BANG = JobError(code="task_error", message="bang", type="KeyError")


# ------------------------------------------------------------------ helpers


def make_job(**fields: Any) -> Job:
    """A new pending job with a fresh id; ``fields`` override any attribute."""
    defaults: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "task": "echo",
        "payload": {"x": 1},
        "created_at": T,
        "updated_at": T,
    }
    return Job(**(defaults | fields))


def scheduled(run_at: float, **fields: Any) -> Job:
    return make_job(status=JobStatus.SCHEDULED, run_at=run_at, **fields)


async def add(store: Store, *jobs: Job) -> list[str]:
    inserted = await store.insert(jobs, now=T)
    return list(inserted.job_ids)


async def running(store: Store, *, lease_until: float = T + 60, **fields: Any) -> Job:
    """A job claimed by ``worker-1``: in progress, attempt 1 (or attempts + 1)."""
    (job_id,) = await add(store, make_job(**fields))
    (job,) = await store.claim([job_id], owner="worker-1", now=T, lease_until=lease_until)
    return job


async def completed(store: Store, *, at: float = T, **fields: Any) -> Job:
    job = await running(store, **fields)
    (done,) = await store.settle(
        [Complete(job_id=job.id, attempt=job.attempts, result="ok")], now=at
    )
    assert done is not None
    return done


async def failed(store: Store, *, at: float = T, error: JobError = BOOM, **fields: Any) -> Job:
    job = await running(store, **fields)
    (dead,) = await store.settle([Bury(job_id=job.id, attempt=job.attempts, error=error)], now=at)
    assert dead is not None
    return dead


async def cancelled(store: Store, **fields: Any) -> Job:
    (job_id,) = await add(store, make_job(**fields))
    return await store.cancel(job_id, now=T)


async def exists(store: Store, job_id: str) -> bool:
    try:
        await store.get(job_id)
    except JobNotFound:
        return False
    return True


async def total(store: Store) -> int:
    return sum((await store.counts()).values())


# One factory per change kind, for the fence tests: (job_id, attempt) -> change.
CHANGES: dict[str, Callable[[str, int], Change]] = {
    "complete": lambda job_id, attempt: Complete(job_id=job_id, attempt=attempt, result=1),
    "reschedule": lambda job_id, attempt: Reschedule(
        job_id=job_id, attempt=attempt, run_at=T + 30, error=BOOM
    ),
    "bury": lambda job_id, attempt: Bury(job_id=job_id, attempt=attempt, error=BOOM),
    "mark_cancelled": lambda job_id, attempt: MarkCancelled(job_id=job_id, attempt=attempt),
    "release": lambda job_id, attempt: Release(job_id=job_id, attempt=attempt),
    "progress": lambda job_id, attempt: Progress(job_id=job_id, attempt=attempt, percent=50.0),
    "renew": lambda job_id, attempt: Renew(job_id=job_id, attempt=attempt, until=T + 999),
}


# ------------------------------------------------------------------ insert


async def test_insert_stores_pending_and_scheduled_jobs_and_returns_ids_in_order(
    store: Store,
) -> None:
    jobs = [
        make_job(task="a", payload={"n": 1}, queue="fast", priority=5, max_attempts=7),
        scheduled(T + 60, task="b", payload={"n": 2}),
        make_job(task="c", payload={}),
    ]

    inserted = await store.insert(jobs, now=T)

    assert inserted.job_ids == tuple(j.id for j in jobs)
    assert inserted.replayed is False
    for job in jobs:
        got = await store.get(job.id)
        assert (got.id, got.task, got.payload, got.queue, got.priority) == (
            job.id,
            job.task,
            job.payload,
            job.queue,
            job.priority,
        )
        assert (got.status, got.run_at, got.attempts, got.max_attempts) == (
            job.status,
            job.run_at,
            0,
            job.max_attempts,
        )
    assert (await store.get(jobs[1].id)).status is JobStatus.SCHEDULED


async def test_same_idempotency_key_and_hash_replays_the_original_ids(store: Store) -> None:
    # Given a batch stored under key "k1"
    first = [make_job(), make_job()]
    original = await store.insert(
        first, now=T, idempotency_key="k1", request_hash="h1", key_expires_at=T + 3600
    )
    # When the same request comes again (with freshly made job ids)
    again = [make_job(), make_job()]
    replay = await store.insert(
        again, now=T + 10, idempotency_key="k1", request_hash="h1", key_expires_at=T + 3610
    )
    # Then the original ids come back and nothing new is stored
    assert original == Inserted(job_ids=tuple(j.id for j in first), replayed=False)
    assert replay == Inserted(job_ids=original.job_ids, replayed=True)
    assert await total(store) == 2
    for job in again:
        assert not await exists(store, job.id)


async def test_same_idempotency_key_with_another_hash_is_a_conflict(store: Store) -> None:
    await store.insert(
        [make_job()], now=T, idempotency_key="k1", request_hash="h1", key_expires_at=T + 3600
    )
    other = make_job()

    with pytest.raises(IdempotencyConflict):
        await store.insert(
            [other], now=T + 10, idempotency_key="k1", request_hash="h2", key_expires_at=T + 3610
        )

    assert not await exists(store, other.id)
    assert await total(store) == 1


@pytest.mark.parametrize("request_hash", ["h1", "h2"], ids=["same-hash", "other-hash"])
async def test_an_expired_idempotency_key_can_be_used_again(
    store: Store, request_hash: str
) -> None:
    first = make_job()
    await store.insert(
        [first], now=T, idempotency_key="k1", request_hash="h1", key_expires_at=T + 60
    )
    later = make_job()

    inserted = await store.insert(
        [later],
        now=T + 61,  # key_expires_at < now
        idempotency_key="k1",
        request_hash=request_hash,
        key_expires_at=T + 121,
    )

    assert inserted.job_ids == (later.id,)
    assert inserted.replayed is False
    assert await exists(store, first.id)
    assert await exists(store, later.id)


async def test_jobs_without_an_idempotency_key_are_always_inserted(store: Store) -> None:
    await add(store, make_job())
    await add(store, make_job())
    assert await total(store) == 2


# ------------------------------------------------------------------ claim


async def test_claim_takes_pending_jobs_only(store: Store) -> None:
    pending = make_job()
    later = scheduled(T + 60)
    busy = await running(store)
    done = await completed(store)
    await add(store, pending, later)

    claimed = await store.claim(
        [pending.id, later.id, busy.id, done.id], owner="worker-2", now=T + 1, lease_until=T + 31
    )

    assert [j.id for j in claimed] == [pending.id]
    assert (await store.get(later.id)).status is JobStatus.SCHEDULED
    assert (await store.get(busy.id)).lease_owner == "worker-1"
    assert (await store.get(done.id)).status is JobStatus.COMPLETED


async def test_claim_counts_the_attempt_and_sets_the_lease(store: Store) -> None:
    (job_id,) = await add(store, make_job(max_attempts=5))

    (job,) = await store.claim([job_id], owner="worker-1", now=T + 1, lease_until=T + 31)

    assert job.id == job_id
    assert job.status is JobStatus.IN_PROGRESS
    assert job.attempts == 1
    assert job.lease_owner == "worker-1"
    assert job.lease_expires_at == T + 31
    stored = await store.get(job_id)
    assert (stored.status, stored.attempts, stored.lease_owner, stored.lease_expires_at) == (
        JobStatus.IN_PROGRESS,
        1,
        "worker-1",
        T + 31,
    )


async def test_a_claimed_job_cannot_be_claimed_again(store: Store) -> None:
    (job_id,) = await add(store, make_job())
    await store.claim([job_id], owner="worker-1", now=T, lease_until=T + 30)

    again = await store.claim([job_id], owner="worker-2", now=T + 1, lease_until=T + 31)

    assert again == []
    job = await store.get(job_id)
    assert (job.attempts, job.lease_owner, job.lease_expires_at) == (1, "worker-1", T + 30)


async def test_concurrent_claims_of_one_job_have_one_winner(store: Store) -> None:
    (job_id,) = await add(store, make_job())
    results: dict[str, list[Job]] = {}

    async def claim(owner: str) -> None:
        results[owner] = await store.claim([job_id], owner=owner, now=T, lease_until=T + 30)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(claim, f"worker-{n}")

    winners = [owner for owner, jobs in results.items() if jobs]
    assert len(winners) == 1
    job = await store.get(job_id)
    assert (job.attempts, job.lease_owner) == (1, winners[0])


async def test_claim_ignores_unknown_ids(store: Store) -> None:
    (job_id,) = await add(store, make_job())

    claimed = await store.claim(
        [str(uuid.uuid4()), job_id, str(uuid.uuid4())], owner="w", now=T, lease_until=T + 30
    )

    assert [j.id for j in claimed] == [job_id]
    assert await store.claim([str(uuid.uuid4())], owner="w", now=T, lease_until=T + 30) == []


# ------------------------------------------------------------------ settle: fences


@pytest.mark.parametrize("kind", list(CHANGES))
async def test_a_change_for_another_attempt_is_fenced_off(store: Store, kind: str) -> None:
    job = await running(store)

    for attempt in (job.attempts - 1, job.attempts + 1):
        assert await store.settle([CHANGES[kind](job.id, attempt)], now=T + 1) == [None]

    assert await store.get(job.id) == job


@pytest.mark.parametrize("kind", list(CHANGES))
async def test_no_change_applies_to_a_finished_job(store: Store, kind: str) -> None:
    job = await completed(store)

    assert await store.settle([CHANGES[kind](job.id, job.attempts)], now=T + 1) == [None]

    assert await store.get(job.id) == job


@pytest.mark.parametrize("kind", [k for k in CHANGES if k != "mark_cancelled"])
async def test_only_a_cancel_applies_to_a_job_that_is_not_running(store: Store, kind: str) -> None:
    # A pending job's attempt number (0) matches, but its status is outside the fence.
    (job_id,) = await add(store, make_job())
    before = await store.get(job_id)

    assert await store.settle([CHANGES[kind](job_id, 0)], now=T + 1) == [None]

    assert await store.get(job_id) == before


@pytest.mark.parametrize("kind", list(CHANGES))
async def test_a_change_for_an_unknown_job_is_none(store: Store, kind: str) -> None:
    assert await store.settle([CHANGES[kind](str(uuid.uuid4()), 1)], now=T) == [None]


# ------------------------------------------------------------------ settle: effects


async def test_complete_stores_the_result_and_clears_the_error(store: Store) -> None:
    # Given a job whose first attempt failed and whose second attempt is running
    first = await running(store)
    await store.settle(
        [Reschedule(job_id=first.id, attempt=1, run_at=T + 10, error=BOOM)], now=T + 1
    )
    await store.promote_due(now=T + 10, limit=10)
    (second,) = await store.claim([first.id], owner="worker-1", now=T + 10, lease_until=T + 40)
    assert (second.attempts, second.error) == (2, BOOM)

    # When it completes
    (done,) = await store.settle(
        [Complete(job_id=first.id, attempt=2, result={"answer": 42})], now=T + 11
    )

    # Then the result is stored and the old error is gone
    assert done is not None
    assert done.status is JobStatus.COMPLETED
    assert done.result == {"answer": 42}
    assert done.error is None
    assert done.attempts == 2
    stored = await store.get(first.id)
    assert (stored.status, stored.result, stored.error) == (
        JobStatus.COMPLETED,
        {"answer": 42},
        None,
    )


async def test_reschedule_sets_run_at_and_the_error(store: Store) -> None:
    job = await running(store)

    (again,) = await store.settle(
        [Reschedule(job_id=job.id, attempt=1, run_at=T + 30, error=BOOM)], now=T + 1
    )

    assert again is not None
    assert (again.status, again.run_at, again.error, again.attempts) == (
        JobStatus.SCHEDULED,
        T + 30,
        BOOM,
        1,
    )
    assert (await store.get(job.id)).status is JobStatus.SCHEDULED
    assert await store.next_run_at() == T + 30


async def test_bury_fails_the_job_into_the_dead_letters(store: Store) -> None:
    job = await running(store)

    (dead,) = await store.settle([Bury(job_id=job.id, attempt=1, error=BOOM)], now=T + 1)

    assert dead is not None
    assert (dead.status, dead.in_dlq, dead.error) == (JobStatus.FAILED, True, BOOM)
    stored = await store.get(job.id)
    assert (stored.status, stored.in_dlq, stored.error) == (JobStatus.FAILED, True, BOOM)


async def test_mark_cancelled_finishes_a_running_job(store: Store) -> None:
    job = await running(store)
    await store.cancel(job.id, now=T + 1)

    (gone,) = await store.settle([MarkCancelled(job_id=job.id, attempt=1)], now=T + 2)

    assert gone is not None
    assert gone.status is JobStatus.CANCELLED
    assert (await store.get(job.id)).status is JobStatus.CANCELLED


async def test_release_gives_the_job_back_without_burning_the_attempt(store: Store) -> None:
    job = await running(store)

    (back,) = await store.settle([Release(job_id=job.id, attempt=1)], now=T + 1)

    assert back is not None
    assert (back.status, back.attempts, back.lease_owner) == (JobStatus.PENDING, 0, None)
    stored = await store.get(job.id)
    assert (stored.status, stored.attempts) == (JobStatus.PENDING, 0)
    # and it can be claimed again, as attempt 1
    (again,) = await store.claim([job.id], owner="worker-2", now=T + 2, lease_until=T + 32)
    assert (again.attempts, again.lease_owner) == (1, "worker-2")


async def test_progress_is_recorded_while_running(store: Store) -> None:
    job = await running(store)

    (moved,) = await store.settle(
        [Progress(job_id=job.id, attempt=1, percent=42.5, message="halfway")], now=T + 1
    )

    assert moved is not None
    assert (moved.status, moved.progress, moved.progress_message) == (
        JobStatus.IN_PROGRESS,
        42.5,
        "halfway",
    )
    stored = await store.get(job.id)
    assert (stored.progress, stored.progress_message, stored.lease_owner) == (
        42.5,
        "halfway",
        "worker-1",
    )


async def test_renew_extends_the_lease_while_running(store: Store) -> None:
    job = await running(store, lease_until=T + 30)

    (renewed,) = await store.settle([Renew(job_id=job.id, attempt=1, until=T + 90)], now=T + 20)

    assert renewed is not None
    assert (renewed.status, renewed.lease_expires_at) == (JobStatus.IN_PROGRESS, T + 90)
    assert (await store.get(job.id)).lease_expires_at == T + 90
    # the renewed lease is live past the old expiry
    assert await store.recover_expired(now=T + 60, limit=10) == Recovered()
    assert (await store.get(job.id)).status is JobStatus.IN_PROGRESS


async def test_settle_returns_one_entry_per_change_in_order(store: Store) -> None:
    a = await running(store)
    b = await running(store)
    c = await running(store)
    unknown = str(uuid.uuid4())

    results = await store.settle(
        [
            Progress(job_id=c.id, attempt=1, percent=10.0),
            Complete(job_id=b.id, attempt=2),  # wrong attempt
            Complete(job_id=a.id, attempt=1, result="a"),
            Bury(job_id=unknown, attempt=1, error=BOOM),
            Reschedule(job_id=b.id, attempt=1, run_at=T + 5, error=BOOM),
        ],
        now=T + 1,
    )

    assert [None if r is None else (r.id, r.status) for r in results] == [
        (c.id, JobStatus.IN_PROGRESS),
        None,
        (a.id, JobStatus.COMPLETED),
        None,
        (b.id, JobStatus.SCHEDULED),
    ]
    assert await store.settle([], now=T + 2) == []


# ------------------------------------------------------------------ promote_due


async def test_promote_due_moves_due_scheduled_jobs_oldest_first(store: Store) -> None:
    oldest, middle, newest = scheduled(T - 30), scheduled(T - 20), scheduled(T - 10)
    at_now, future = scheduled(T), scheduled(T + 10)
    waiting = make_job(run_at=T - 100)  # pending: not a candidate, whatever its run_at
    await add(store, newest, future, oldest, at_now, middle, waiting)

    first = await store.promote_due(now=T, limit=2)
    second = await store.promote_due(now=T, limit=10)

    assert [j.id for j in first] == [oldest.id, middle.id]
    assert [j.id for j in second] == [newest.id, at_now.id]  # run_at == now is due
    assert {j.status for j in first + second} == {JobStatus.PENDING}
    for job in (oldest, middle, newest, at_now):
        assert (await store.get(job.id)).status is JobStatus.PENDING
    assert (await store.get(future.id)).status is JobStatus.SCHEDULED
    assert await store.promote_due(now=T, limit=10) == []


async def test_promote_due_with_nothing_due_returns_nothing(store: Store) -> None:
    await add(store, scheduled(T + 1), make_job())
    assert await store.promote_due(now=T, limit=10) == []


# ------------------------------------------------------------------ cancel


@pytest.mark.parametrize("make", [make_job, lambda: scheduled(T + 60)], ids=["pending", "sched"])
async def test_cancel_a_waiting_job_cancels_it(store: Store, make: Callable[[], Job]) -> None:
    (job_id,) = await add(store, make())

    job = await store.cancel(job_id, now=T + 1)

    assert (job.id, job.status) == (job_id, JobStatus.CANCELLED)
    assert (await store.get(job_id)).status is JobStatus.CANCELLED
    assert await store.claim([job_id], owner="w", now=T + 2, lease_until=T + 30) == []
    assert await store.promote_due(now=T + 100, limit=10) == []


async def test_cancel_a_running_job_requests_cancellation(store: Store) -> None:
    job = await running(store)

    requested = await store.cancel(job.id, now=T + 1)

    assert (requested.status, requested.cancel_requested) == (JobStatus.IN_PROGRESS, True)
    stored = await store.get(job.id)
    assert (stored.status, stored.cancel_requested, stored.lease_owner) == (
        JobStatus.IN_PROGRESS,
        True,
        "worker-1",
    )


@pytest.mark.parametrize("finish", [completed, failed, cancelled])
async def test_cancel_a_finished_job_is_an_invalid_transition(
    store: Store, finish: Callable[..., Any]
) -> None:
    job = await finish(store)

    with pytest.raises(InvalidTransition):
        await store.cancel(job.id, now=T + 1)

    assert await store.get(job.id) == job


async def test_cancel_an_unknown_job_is_not_found(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.cancel(str(uuid.uuid4()), now=T)


# ------------------------------------------------------------------ replay


async def test_replay_starts_a_new_attempt_series_and_keeps_the_first_error(
    store: Store,
) -> None:
    # Given a dead letter that failed with BOOM
    job = await failed(store, error=BOOM)

    # When it is replayed
    (first,) = await store.replay([job.id], now=T + 1)

    # Then it runs again from attempt 0, remembering the error that sent it to the DLQ
    assert (first.status, first.attempts, first.replay_count, first.original_error) == (
        JobStatus.PENDING,
        0,
        1,
        BOOM,
    )
    stored = await store.get(job.id)
    assert (stored.status, stored.attempts, stored.replay_count, stored.original_error) == (
        JobStatus.PENDING,
        0,
        1,
        BOOM,
    )

    # When it fails again, with another error, and is replayed again
    (claimed,) = await store.claim([job.id], owner="w", now=T + 2, lease_until=T + 32)
    assert claimed.attempts == 1
    await store.settle([Bury(job_id=job.id, attempt=1, error=BANG)], now=T + 3)
    (second,) = await store.replay([job.id], now=T + 4)

    # Then the original error is still the FIRST one
    assert (second.status, second.attempts, second.replay_count, second.original_error) == (
        JobStatus.PENDING,
        0,
        2,
        BOOM,
    )
    assert (await store.get(job.id)).original_error == BOOM


async def test_replay_skips_jobs_that_have_not_failed(store: Store) -> None:
    dead = await failed(store)
    done = await completed(store)
    busy = await running(store)
    (waiting,) = await add(store, make_job())

    replayed = await store.replay(
        [waiting, done.id, dead.id, busy.id, str(uuid.uuid4())], now=T + 1
    )

    assert [j.id for j in replayed] == [dead.id]
    assert await store.get(done.id) == done
    assert await store.get(busy.id) == busy
    assert (await store.get(waiting)).status is JobStatus.PENDING
    assert (await store.get(waiting)).replay_count == 0


# ------------------------------------------------------------------ recover_expired


async def test_recover_expired_requeues_or_buries_lost_jobs_and_spares_live_ones(
    store: Store,
) -> None:
    # Given two jobs whose lease ran out at T+10 and one whose lease is live
    retryable = await running(store, max_attempts=3, lease_until=T + 10)
    last_try = await running(store, max_attempts=1, lease_until=T + 10)
    live = await running(store, max_attempts=1, lease_until=T + 100)

    # When the sweep runs at T+20
    recovered = await store.recover_expired(now=T + 20, limit=10)

    # Then the job with attempts left runs again, the lost attempt counted
    assert [j.id for j in recovered.requeued] == [retryable.id]
    assert [j.id for j in recovered.buried] == [last_try.id]
    requeued = await store.get(retryable.id)
    assert requeued.status is JobStatus.PENDING
    assert requeued.attempts == 1
    assert requeued.error is not None
    assert requeued.error.code == "worker_lost"
    assert requeued.lease_owner is None
    # and the job without attempts left is dead-lettered
    buried = await store.get(last_try.id)
    assert (buried.status, buried.in_dlq) == (JobStatus.FAILED, True)
    assert buried.error is not None
    assert buried.error.code == "worker_lost"
    # and the live lease is untouched
    assert await store.get(live.id) == live
    # and the requeued job can be claimed as its next attempt
    (again,) = await store.claim([retryable.id], owner="w2", now=T + 21, lease_until=T + 51)
    assert again.attempts == 2


async def test_recover_expired_respects_the_limit(store: Store) -> None:
    lost = [await running(store, lease_until=T + 10) for _ in range(3)]

    first = await store.recover_expired(now=T + 20, limit=2)
    second = await store.recover_expired(now=T + 20, limit=2)

    assert len(first.requeued) == 2
    assert len(second.requeued) == 1
    assert {j.id for j in first.requeued + second.requeued} == {j.id for j in lost}
    assert first.buried == second.buried == ()


# ------------------------------------------------------------------ purge


async def test_purge_removes_finished_jobs_older_than_their_own_cutoff(store: Store) -> None:
    # Given finished jobs at T and T+100, and active jobs created long ago
    old_done = await completed(store, at=T)
    new_done = await completed(store, at=T + 100)
    old_dead = await failed(store, at=T)
    new_dead = await failed(store, at=T + 100)
    active = [
        (await add(store, make_job(created_at=T - 1000)))[0],
        (await add(store, scheduled(T + 5, created_at=T - 1000)))[0],
        (await running(store, created_at=T - 1000)).id,
    ]

    # When completed jobs are kept 50s and failed ones 150s (cutoffs T+50 and T-50)
    purged = await store.purge(
        now=T + 100, completed_before=T + 50, failed_before=T - 50, limit=100
    )

    # Then only the old completed job is gone
    assert purged == [old_done.id]
    assert not await exists(store, old_done.id)
    for job_id in [new_done.id, old_dead.id, new_dead.id, *active]:
        assert await exists(store, job_id)

    # When the failed cutoff moves past the old dead letter
    purged = await store.purge(
        now=T + 100, completed_before=T + 50, failed_before=T + 50, limit=100
    )

    # Then it goes too, and the rest stays
    assert purged == [old_dead.id]
    for job_id in [new_done.id, new_dead.id, *active]:
        assert await exists(store, job_id)


async def test_purge_respects_the_limit_and_returns_the_deleted_ids(store: Store) -> None:
    done = {(await completed(store, at=T)).id for _ in range(3)}

    first = await store.purge(now=T + 100, completed_before=T + 1, failed_before=T + 1, limit=2)
    second = await store.purge(now=T + 100, completed_before=T + 1, failed_before=T + 1, limit=2)

    assert len(first) == 2
    assert len(second) == 1
    assert set(first) | set(second) == done
    for job_id in done:
        assert not await exists(store, job_id)
    assert (
        await store.purge(now=T + 100, completed_before=T + 1, failed_before=T + 1, limit=2) == []
    )


async def test_a_zero_limit_changes_nothing(store: Store) -> None:
    # Given one job due for each batch operation
    due = scheduled(T - 10)
    await add(store, due)
    lost = await running(store, lease_until=T - 5)
    old = await completed(store, at=T - 100)
    before = {j.id: await store.get(j.id) for j in (due, lost, old)}

    # When each runs with limit=0
    promoted = await store.promote_due(now=T, limit=0)
    recovered = await store.recover_expired(now=T, limit=0)
    purged = await store.purge(now=T, completed_before=T, failed_before=T, limit=0)

    # Then none of them touched anything
    assert promoted == []
    assert recovered == Recovered()
    assert purged == []
    for job_id, job in before.items():
        assert await exists(store, job_id)
        assert await store.get(job_id) == job


# ------------------------------------------------------------------ reads


async def test_list_filters_by_status_task_and_queue_newest_first(store: Store) -> None:
    a = make_job(task="email", queue="default", created_at=T + 1)
    b = make_job(task="resize", queue="media", created_at=T + 2)
    c = make_job(task="email", queue="media", created_at=T + 3)
    d = scheduled(T + 60, task="email", queue="default", created_at=T + 4)
    await add(store, a, b, c, d)

    async def ids(**query: Any) -> list[str]:
        return [j.id for j in await store.list(JobQuery(**query))]

    assert await ids() == [d.id, c.id, b.id, a.id]
    assert await ids(task="email") == [d.id, c.id, a.id]
    assert await ids(queue="media") == [c.id, b.id]
    assert await ids(status=JobStatus.PENDING) == [c.id, b.id, a.id]
    assert await ids(status=JobStatus.SCHEDULED) == [d.id]
    assert await ids(status=JobStatus.PENDING, task="email", queue="default") == [a.id]
    assert await ids(status=JobStatus.FAILED) == []
    assert await ids(task="nope") == []


async def test_list_pages_with_limit_and_offset(store: Store) -> None:
    jobs = [make_job(created_at=T + n) for n in range(5)]
    await add(store, *jobs)
    newest_first = [j.id for j in reversed(jobs)]

    async def page(limit: int, offset: int) -> list[str]:
        return [j.id for j in await store.list(JobQuery(limit=limit, offset=offset))]

    assert await page(2, 0) == newest_first[0:2]
    assert await page(2, 2) == newest_first[2:4]
    assert await page(2, 4) == newest_first[4:5]
    assert await page(2, 5) == []
    assert await page(10, 100) == []


async def test_counts_cover_every_status(store: Store) -> None:
    assert dict(await store.counts()) == dict.fromkeys(JobStatus, 0)

    await add(store, make_job(), make_job(), scheduled(T + 60))
    await running(store)
    await completed(store)
    await failed(store)
    await cancelled(store)

    assert dict(await store.counts()) == {
        JobStatus.PENDING: 2,
        JobStatus.SCHEDULED: 1,
        JobStatus.IN_PROGRESS: 1,
        JobStatus.COMPLETED: 1,
        JobStatus.FAILED: 1,
        JobStatus.CANCELLED: 1,
    }


async def test_count_status_is_bounded_by_its_limit(store: Store) -> None:
    await add(store, *(make_job() for _ in range(7)), scheduled(T + 60))
    assert await store.count_status(JobStatus.PENDING, limit=100) == 7
    assert await store.count_status(JobStatus.PENDING, limit=3) == 3
    assert await store.count_status(JobStatus.SCHEDULED, limit=100) == 1
    assert await store.count_status(JobStatus.FAILED, limit=100) == 0
    assert await store.count_status(JobStatus.PENDING, limit=0) == 0


async def test_next_run_at_is_the_earliest_scheduled_run(store: Store) -> None:
    assert await store.next_run_at() is None
    await add(store, make_job(run_at=T - 100))  # pending: not scheduled
    assert await store.next_run_at() is None

    await add(store, scheduled(T + 20), scheduled(T + 10), scheduled(T + 30))
    assert await store.next_run_at() == T + 10

    await store.promote_due(now=T + 15, limit=10)
    assert await store.next_run_at() == T + 20


async def test_get_an_unknown_job_is_not_found(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.get(str(uuid.uuid4()))


# ------------------------------------------------------------------ the outbox marker


async def test_new_pending_jobs_are_unpublished_until_marked(store: Store) -> None:
    ids = await add(store, make_job(), make_job(), scheduled(T + 60))
    lost = await store.unpublished(before=T + 1, now=T, limit=10)
    assert {j.id for j in lost} == set(ids[:2])  # the scheduled one is not due to publish
    await store.mark_published(ids[:1])
    assert [j.id for j in await store.unpublished(before=T + 1, now=T, limit=10)] == [ids[1]]
    assert (await store.get(ids[0])).published


async def test_unpublished_leaves_recent_rows_to_the_publisher_in_flight(store: Store) -> None:
    await add(store, make_job())
    assert await store.unpublished(before=T, now=T, limit=10) == []  # updated at T: not before T
    assert await store.unpublished(before=T + 1, now=T, limit=0) == []


async def test_every_move_back_to_pending_needs_a_new_publish(store: Store) -> None:
    # promote, release, replay and lease recovery all clear the marker
    (promoted_id,) = await add(store, scheduled(T))
    await store.mark_published([promoted_id])  # a scheduled job is not pending: no effect
    (promoted,) = await store.promote_due(now=T + 1, limit=10)
    released = await running(store)
    (back,) = await store.settle(
        [Release(job_id=released.id, attempt=released.attempts)], now=T + 1
    )
    dead = await failed(store)
    (replayed,) = await store.replay([dead.id], now=T + 1)
    lost = await running(store, lease_until=T + 5)
    recovered = await store.recover_expired(now=T + 10, limit=10)
    assert back is not None
    moved = [promoted, back, replayed, *recovered.requeued]
    assert [j.id for j in moved] == [promoted_id, released.id, dead.id, lost.id]
    assert not any(j.published for j in moved)
    unpublished = {j.id for j in await store.unpublished(before=T + 100, now=T + 1, limit=10)}
    assert {j.id for j in moved} <= unpublished
    await store.mark_published([j.id for j in moved])
    assert not {j.id for j in moved} & {
        j.id for j in await store.unpublished(before=T + 100, now=T + 1, limit=10)
    }


async def test_marking_a_job_that_is_not_pending_changes_nothing(store: Store) -> None:
    job = await running(store)
    await store.mark_published([job.id, str(uuid.uuid4()), "not-a-uuid"])
    assert not (await store.get(job.id)).published


async def test_replay_clears_an_old_cancel_request(store: Store) -> None:
    job = await running(store)
    await store.cancel(job.id, now=T)
    (dead,) = await store.settle([Bury(job_id=job.id, attempt=job.attempts, error=BOOM)], now=T)
    assert dead is not None and dead.cancel_requested
    (replayed,) = await store.replay([job.id], now=T + 1)
    assert not replayed.cancel_requested


async def test_a_lost_last_attempt_is_buried_with_its_reason(store: Store) -> None:
    job = await running(store, max_attempts=1, lease_until=T + 1)
    recovered = await store.recover_expired(now=T + 2, limit=10)
    (buried,) = recovered.buried
    assert buried.id == job.id and buried.error is not None
    assert (buried.error.code, buried.error.reason) == ("worker_lost", "max_attempts_exceeded")


async def test_a_sweep_touches_what_it_takes_so_another_sweeper_skips_it(store: Store) -> None:
    (job_id,) = await add(store, make_job())
    first = await store.unpublished(before=T + 10, now=T + 50, limit=10)
    second = await store.unpublished(before=T + 10, now=T + 50, limit=10)
    assert [j.id for j in first] == [job_id]
    assert second == []  # touched to T + 50: outside the window of a concurrent sweep
    assert [j.id for j in await store.unpublished(before=T + 60, now=T + 60, limit=10)] == [job_id]


async def test_dead_messages_are_kept_newest_first_with_their_reasons(store: Store) -> None:
    await store.record_dead_messages(
        [
            DeadMessage(queue="default", body="\ufffdgarbage", reason="malformed_message: x", at=T),
            DeadMessage(
                queue="images", body='{"type":"JobMessage"}', reason="unknown_job: y", at=T + 1
            ),
        ]
    )
    await store.record_dead_messages([])
    newest, oldest = await store.dead_messages()
    assert (newest.queue, newest.reason, newest.at) == ("images", "unknown_job: y", T + 1)
    assert (oldest.body, oldest.reason) == ("\ufffdgarbage", "malformed_message: x")
    assert newest.id is not None and oldest.id is not None and newest.id > oldest.id
    assert [m.queue for m in await store.dead_messages(limit=1, offset=1)] == ["default"]


# ------------------------------------------------------------------ values the store refuses


@pytest.mark.parametrize(
    "payload",
    [{"s": "a\x00b"}, {"k\x00": 1}, {"s": "\ud800"}, {"n": 10**5000}],
    ids=["nul-value", "nul-key", "lone-surrogate", "huge-int"],
)
async def test_a_refused_value_fails_the_insert_as_not_storable_and_stores_nothing(
    store: Store, payload: dict[str, Any]
) -> None:
    good, bad = make_job(), make_job(payload=payload)
    with pytest.raises(NotStorable):
        await store.insert([good, bad], now=T)
    assert await store.counts() == dict.fromkeys(JobStatus, 0)  # the batch is atomic
    # and the store keeps working: the good job alone goes in
    assert await add(store, good) == [good.id]


async def test_a_refused_result_fails_the_whole_settle_batch_and_applies_none(
    store: Store,
) -> None:
    a, b = await running(store), await running(store)
    changes: list[Change] = [
        Complete(job_id=a.id, attempt=1, result={"ok": True}),
        Complete(job_id=b.id, attempt=1, result={"bad": "x\x00"}),
    ]
    with pytest.raises(NotStorable):
        await store.settle(changes, now=T + 1)
    assert (await store.get(a.id)).status is JobStatus.IN_PROGRESS
    assert (await store.get(b.id)).status is JobStatus.IN_PROGRESS
    applied = await store.settle(changes[:1], now=T + 1)
    assert applied[0] is not None and applied[0].status is JobStatus.COMPLETED


async def test_an_error_message_the_store_refuses_is_not_storable(store: Store) -> None:
    job = await running(store)
    error = JobError(code="task_error", message="bad \x00 message", type="ValueError")
    with pytest.raises(NotStorable):
        await store.settle([Bury(job_id=job.id, attempt=1, error=error)], now=T + 1)
    assert (await store.get(job.id)).status is JobStatus.IN_PROGRESS


async def test_recover_expired_with_owners_takes_their_live_leases_and_spares_the_rest(
    store: Store,
) -> None:
    gone_id, live_id = await add(store, make_job(), make_job())
    (gone,) = await store.claim([gone_id], owner="host:1", now=T, lease_until=T + 60)
    (live,) = await store.claim([live_id], owner="host:2", now=T, lease_until=T + 60)
    recovered = await store.recover_expired(now=T, limit=10, owners=["host:1"])
    assert [j.id for j in recovered.requeued] == [gone.id]
    assert (await store.get(live.id)).status is JobStatus.IN_PROGRESS
    assert (await store.get(gone.id)).error is not None
