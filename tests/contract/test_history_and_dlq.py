"""Contract of the attempt history, replay lineage and dead-letter queries, over every store.

Each test talks to the store through the port only; times are explicit ``now=`` values.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from taskflow.errors import NotStorable
from taskflow.jobs import JobError, JobStatus, Outcome
from taskflow.ports.store import (
    Bury,
    Change,
    Complete,
    DeadLetterQuery,
    MarkCancelled,
    Release,
    ReplayRequest,
    Reschedule,
)
from tests.contract.conftest import Store
from tests.contract.test_job_store import (
    BANG,
    BOOM,
    T,
    add,
    failed,
    make_job,
    running,
)

pytestmark = pytest.mark.anyio

TIMEOUT = JobError(code="timeout", message="took longer than 1 s", type=None)


async def test_each_finished_attempt_is_in_the_history(store: Store) -> None:
    # Given: a job that fails once, is retried, then times out for good
    job = await running(store, max_attempts=2)
    (retried,) = await store.settle(
        [Reschedule(job_id=job.id, attempt=1, run_at=T + 5, error=BOOM)], now=T + 2
    )
    assert retried is not None and retried.history[0].outcome is Outcome.RETRIED
    await store.promote_due(now=T + 5, limit=10)
    await store.claim([job.id], owner="worker-2", now=T + 6, lease_until=T + 60)
    (dead,) = await store.settle([Bury(job_id=job.id, attempt=2, error=TIMEOUT)], now=T + 7.5)

    # Then: two attempts, each with its worker, times, outcome and error
    assert dead is not None
    first, last = dead.history
    assert (first.number, first.series, first.worker) == (1, 0, "worker-1")
    assert (first.started_at, first.finished_at, first.duration) == (T, T + 2, 2.0)
    assert first.outcome is Outcome.RETRIED and first.error == BOOM
    assert (last.number, last.worker, last.outcome) == (2, "worker-2", Outcome.DEAD_LETTERED)
    assert last.duration == 1.5 and last.error == TIMEOUT
    # and the store reads back what it returned
    assert (await store.get(job.id)).history == dead.history


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        (lambda i: Complete(job_id=i, attempt=1, result=1), Outcome.COMPLETED),
        (lambda i: MarkCancelled(job_id=i, attempt=1), Outcome.CANCELLED),
        (lambda i: Release(job_id=i, attempt=1), Outcome.RELEASED),
    ],
)
async def test_every_way_an_attempt_ends_is_recorded(
    store: Store, change: Callable[[str], Change], outcome: Outcome
) -> None:
    job = await running(store)
    (after,) = await store.settle([change(job.id)], now=T + 1)
    assert after is not None
    assert [(a.number, a.outcome, a.error) for a in after.history] == [(1, outcome, None)]


async def test_a_lost_worker_is_an_attempt_in_the_history(store: Store) -> None:
    job = await running(store, lease_until=T + 10)
    recovered = await store.recover_expired(now=T + 11, limit=10)
    (requeued,) = recovered.requeued
    (attempt,) = requeued.history
    assert attempt.outcome is Outcome.WORKER_LOST and attempt.worker == "worker-1"
    assert attempt.error is not None and attempt.error.code == "worker_lost"
    assert requeued.id == job.id


async def test_an_error_keeps_its_traceback(store: Store) -> None:
    error = JobError(code="task_error", message="boom", type="ValueError", traceback="Tb\n  x")
    dead = await failed(store, error=error)
    stored = await store.get(dead.id)
    assert stored.error is not None and stored.error.traceback == "Tb\n  x"
    assert stored.history[-1].error == error


async def test_a_replay_with_a_corrected_payload_keeps_the_lineage(store: Store) -> None:
    dead = await failed(store, payload={"size": -1})
    request = ReplayRequest(by="ops@example", reason="size fixed", payload={"size": 3})
    (replayed,) = await store.replay([dead.id], now=T + 10, request=request)
    assert replayed.payload == {"size": 3}
    assert replayed.original_payload == {"size": -1}
    (record,) = replayed.replays
    assert (record.at, record.by, record.reason, record.payload_changed) == (
        T + 10,
        "ops@example",
        "size fixed",
        True,
    )
    # A second correction keeps the first payload as the original
    (again,) = await store.claim([dead.id], owner="w", now=T + 11, lease_until=T + 60)
    await store.settle([Bury(job_id=dead.id, attempt=1, error=BANG)], now=T + 12)
    request = ReplayRequest(payload={"size": 4})
    (twice,) = await store.replay([dead.id], now=T + 13, request=request)
    assert twice.payload == {"size": 4} and twice.original_payload == {"size": -1}
    assert [r.payload_changed for r in twice.replays] == [True, True]
    assert [(a.series, a.number) for a in twice.history] == [(0, 1), (1, 1)]
    assert again.replay_count == 1


async def test_a_replay_without_a_payload_changes_none(store: Store) -> None:
    dead = await failed(store, payload={"a": 1})
    (replayed,) = await store.replay([dead.id], now=T + 1, request=ReplayRequest(payload={"a": 1}))
    assert replayed.payload == {"a": 1} and replayed.original_payload is None
    assert [r.payload_changed for r in replayed.replays] == [False]
    (plain,) = await store.replay([(await failed(store)).id], now=T + 2)
    assert plain.replays[0].by is None and plain.replays[0].payload_changed is False
    assert plain.original_payload is None  # no corrected payload: nothing to remember


async def test_a_replay_payload_the_store_refuses_is_not_storable(store: Store) -> None:
    dead = await failed(store)
    with pytest.raises(NotStorable):
        await store.replay([dead.id], now=T + 1, request=ReplayRequest(payload={"a": "\x00"}))
    assert (await store.get(dead.id)).status is JobStatus.FAILED


async def bury_many(store: Store) -> dict[str, str]:
    """Five dead letters, told apart by task, queue, error, time and payload."""
    made = {
        "resize_a": await failed(store, task="resize", queue="images", at=T + 1),
        "resize_b": await failed(
            store, task="resize", queue="images", error=TIMEOUT, at=T + 2, payload={"p": "cat"}
        ),
        "mail": await failed(store, task="mail", queue="default", error=BANG, at=T + 3),
        "mail_late": await failed(store, task="mail", queue="default", at=T + 4),
        "resize_c": await failed(store, task="resize", queue="default", at=T + 5),
    }
    await add(store, make_job(task="resize"))  # pending: never a dead letter
    return {name: job.id for name, job in made.items()}


async def names(store: Store, query: DeadLetterQuery, ids: dict[str, str]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[j.id] for j in await store.list_dead_letters(query)]


async def test_dead_letters_are_newest_first_and_filters_combine(store: Store) -> None:
    ids = await bury_many(store)
    q = DeadLetterQuery
    assert await names(store, q(), ids) == [
        "resize_c",
        "mail_late",
        "mail",
        "resize_b",
        "resize_a",
    ]
    assert await names(store, q(task="resize", queue="images"), ids) == ["resize_b", "resize_a"]
    assert await names(store, q(error_code="timeout"), ids) == ["resize_b"]
    assert await names(store, q(since=T + 2, until=T + 4), ids) == ["mail", "resize_b"]
    assert await names(store, q(task="mail", since=T + 4), ids) == ["mail_late"]
    assert await names(store, q(text="BANG"), ids) == ["mail"]  # message, any case
    assert await names(store, q(text="keyerror"), ids) == ["mail"]  # error type
    assert await names(store, q(text="cat"), ids) == ["resize_b"]  # payload
    assert await names(store, q(text=ids["mail_late"]), ids) == ["mail_late"]  # id
    assert await names(store, q(task="nope"), ids) == []
    assert await store.count_dead_letters(q(task="resize")) == 3
    assert await store.count_dead_letters(q(text="cat", task="mail")) == 0


async def test_dead_letters_page_by_cursor_without_gaps(store: Store) -> None:
    ids = await bury_many(store)
    first = await store.list_dead_letters(DeadLetterQuery(limit=2))
    last = first[-1]
    assert last.finished_at is not None
    # A job that dies meanwhile is newer than the cursor: it does not shift the next page
    await failed(store, at=T + 9)
    rest = await store.list_dead_letters(
        DeadLetterQuery(limit=10, before=(last.finished_at, last.id))
    )
    assert [j.id for j in first + rest] == [
        ids[n] for n in ("resize_c", "mail_late", "mail", "resize_b", "resize_a")
    ]
    # offset counts from the newest, the one that died meanwhile included
    offset = await store.list_dead_letters(DeadLetterQuery(limit=2, offset=4))
    assert [j.id for j in offset] == [ids["resize_b"], ids["resize_a"]]


async def test_purge_deletes_only_matching_dead_letters(store: Store) -> None:
    ids = await bury_many(store)
    purged = await store.purge_dead_letters(DeadLetterQuery(task="mail", limit=10))
    assert sorted(purged) == sorted([ids["mail"], ids["mail_late"]])
    left = {j.id for j in await store.list_dead_letters(DeadLetterQuery(limit=10))}
    assert left == {ids["resize_a"], ids["resize_b"], ids["resize_c"]}
    # bounded by the limit
    assert len(await store.purge_dead_letters(DeadLetterQuery(limit=2))) == 2
    assert await store.count_dead_letters(DeadLetterQuery()) == 1
    assert await store.purge_dead_letters(DeadLetterQuery(text=str(uuid.uuid4()))) == []
