"""MemoryJobStore: the in-memory twin of the JobStore port, with inspection helpers."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import anyio

from taskflow.errors import IdempotencyConflict, JobNotFound, NotStorable
from taskflow.jobs import (
    Attempt,
    Job,
    JobError,
    JobStatus,
    Outcome,
    ReplayRecord,
    Trigger,
    sources,
    transition,
)
from taskflow.ports.store import (
    Bury,
    Change,
    Complete,
    DeadLetterQuery,
    DeadMessage,
    Inserted,
    JobQuery,
    MarkCancelled,
    Progress,
    Recovered,
    Release,
    Renew,
    ReplayRequest,
    Reschedule,
)
from taskflow.storable import find_unstorable, find_unstorable_result, text_problem

WORKER_LOST = JobError(
    code="worker_lost", message="the worker holding the job stopped renewing its lease"
)


@dataclass(frozen=True, slots=True)
class _Key:
    request_hash: str | None
    job_ids: tuple[str, ...]
    expires_at: float | None


class MemoryJobStore:
    """Implements ``JobStore`` and ``JobQueries`` in a dict. Not durable; one process only.

    Inspection helpers for tests: ``jobs``, ``dead_letters()``, ``writes``.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._keys: dict[str, _Key] = {}
        # Indexes, so no sweep scans every job ever kept: counts per status, and the ids in
        # each status that a periodic duty reads (scheduled, in progress, pending).
        self._dead_messages: list[DeadMessage] = []
        self._counts: Counter[JobStatus] = Counter()
        self._by_status: dict[JobStatus, dict[str, None]] = {s: {} for s in JobStatus}
        self.writes = Counter[str]()
        """How many store calls of each kind were made (to check batching)."""

    def _put(self, job: Job) -> None:
        old = self._jobs.get(job.id)
        if old is not None and old.status is not job.status:
            self._counts[old.status] -= 1
            del self._by_status[old.status][job.id]
        if old is None or old.status is not job.status:
            self._counts[job.status] += 1
            self._by_status[job.status][job.id] = None
        self._jobs[job.id] = job

    def _drop(self, job_id: str) -> None:
        job = self._jobs.pop(job_id)
        self._counts[job.status] -= 1
        del self._by_status[job.status][job_id]

    def _in(self, status: JobStatus) -> list[Job]:
        return [self._jobs[i] for i in self._by_status[status]]

    # ------------------------------------------------------------ inspection

    @property
    def jobs(self) -> Mapping[str, Job]:
        return dict(self._jobs)

    def dead_letters(self) -> list[Job]:
        return sorted(self._in(JobStatus.FAILED), key=lambda j: j.updated_at)

    def get_nowait(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(f"job {job_id!r} not found", job_id=job_id) from None

    # ------------------------------------------------------------ writes

    async def insert(
        self,
        jobs: Sequence[Job],
        *,
        now: float,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        key_expires_at: float | None = None,
    ) -> Inserted:
        self.writes["insert"] += 1
        _refuse_jobs(jobs, idempotency_key)
        if idempotency_key is not None:
            known = self._keys.get(idempotency_key)
            if known is not None and (known.expires_at is None or known.expires_at > now):
                if known.request_hash != request_hash:
                    raise IdempotencyConflict(
                        "the idempotency key was used with a different request",
                        idempotency_key=idempotency_key,
                    )
                return Inserted(job_ids=known.job_ids, replayed=True)
            self._keys[idempotency_key] = _Key(
                request_hash, tuple(j.id for j in jobs), key_expires_at
            )
        for job in jobs:
            self._put(replace(job, published=False))
        return Inserted(job_ids=tuple(j.id for j in jobs))

    async def claim(
        self, job_ids: Sequence[str], *, owner: str, now: float, lease_until: float
    ) -> list[Job]:
        self.writes["claim"] += 1
        claimed: list[Job] = []
        allowed = sources(Trigger.CLAIM)
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is None or job.status not in allowed:
                continue
            new = replace(
                job,
                status=transition(job.status, Trigger.CLAIM),
                attempts=job.attempts + 1,
                lease_owner=owner,
                lease_expires_at=lease_until,
                started_at=now,
                updated_at=now,
                progress=0.0,
                progress_message=None,
            )
            self._put(new)
            claimed.append(new)
        return claimed

    async def settle(self, changes: Sequence[Change], *, now: float) -> list[Job | None]:
        self.writes["settle"] += 1
        _refuse_changes(changes)  # like PostgreSQL: one refused value fails the whole batch
        return [self._apply(change, now) for change in changes]

    def _apply(self, change: Change, now: float) -> Job | None:
        job = self._jobs.get(change.job_id)
        if job is None or job.attempts != change.attempt:
            return None
        if change.trigger is None:  # progress and lease renewal: only while running
            if job.status is not JobStatus.IN_PROGRESS:
                return None
        elif job.status not in sources(change.trigger):
            return None
        new: Job
        match change:
            case Complete():
                new = replace(
                    job,
                    history=_ended(job, Outcome.COMPLETED, now),
                    status=JobStatus.COMPLETED,
                    result=change.result,
                    error=None,
                    progress=100.0,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            case Reschedule():
                new = replace(
                    job,
                    history=_ended(job, Outcome.RETRIED, now, change.error),
                    status=JobStatus.SCHEDULED,
                    run_at=change.run_at,
                    error=change.error,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            case Bury():
                new = replace(
                    job,
                    history=_ended(job, Outcome.DEAD_LETTERED, now, change.error),
                    status=JobStatus.FAILED,
                    error=change.error,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            case MarkCancelled():
                new = replace(
                    job,
                    history=_ended(job, Outcome.CANCELLED, now),
                    status=JobStatus.CANCELLED,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            case Release():
                new = replace(
                    job,
                    history=_ended(job, Outcome.RELEASED, now),
                    status=JobStatus.PENDING,
                    published=False,
                    attempts=job.attempts - 1,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            case Progress():
                new = replace(job, progress=change.percent, progress_message=change.message)
            case Renew():
                new = replace(job, lease_expires_at=change.until)
        new = replace(new, updated_at=now)
        self._put(new)
        return new

    async def promote_due(self, *, now: float, limit: int) -> list[Job]:
        self.writes["promote_due"] += 1
        due = sorted(
            (j for j in self._in(JobStatus.SCHEDULED) if (j.run_at or 0.0) <= now),
            key=lambda j: (j.run_at or 0.0, j.created_at),
        )[:limit]
        promoted = []
        for job in due:
            new = replace(
                job, status=transition(job.status, Trigger.PROMOTE), published=False, updated_at=now
            )
            self._put(new)
            promoted.append(new)
        return promoted

    async def cancel(self, job_id: str, *, now: float) -> Job:
        self.writes["cancel"] += 1
        job = self.get_nowait(job_id)
        target = transition(job.status, Trigger.CANCEL)  # raises for terminal jobs
        if job.status is JobStatus.IN_PROGRESS:
            new = replace(job, cancel_requested=True, updated_at=now)
        else:
            new = replace(job, status=target, finished_at=now, updated_at=now)
        self._put(new)
        return new

    async def replay(
        self, job_ids: Sequence[str], *, now: float, request: ReplayRequest | None = None
    ) -> list[Job]:
        self.writes["replay"] += 1
        request = request or ReplayRequest()
        if request.payload is not None and find_unstorable(request.payload):
            raise NotStorable("the store refused a value of the replayed payload")
        replayed = []
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is None or job.status not in sources(Trigger.REPLAY):
                continue
            changed = request.payload is not None and request.payload != job.payload
            record = ReplayRecord(
                at=now, by=request.by, reason=request.reason, payload_changed=changed
            )
            new = replace(
                job,
                payload=request.payload if changed and request.payload is not None else job.payload,
                original_payload=(job.original_payload or job.payload)
                if changed
                else job.original_payload,
                replays=(*job.replays, record),
                status=transition(job.status, Trigger.REPLAY),
                attempts=0,
                published=False,
                cancel_requested=False,
                replay_count=job.replay_count + 1,
                original_error=job.original_error or job.error,
                error=None,
                result=None,
                finished_at=None,
                run_at=None,
                updated_at=now,
            )
            self._put(new)
            replayed.append(new)
        return replayed

    async def recover_expired(
        self, *, now: float, limit: int, owners: Sequence[str] = ()
    ) -> Recovered:
        self.writes["recover_expired"] += 1
        gone = set(owners)
        expired = sorted(
            (
                j
                for j in self._in(JobStatus.IN_PROGRESS)
                if (j.lease_expires_at is not None and j.lease_expires_at < now)
                or (j.lease_owner is not None and j.lease_owner in gone)
            ),
            key=lambda j: j.lease_expires_at or 0.0,
        )[:limit]
        requeued, buried = [], []
        for job in expired:
            job = replace(job, history=_ended(job, Outcome.WORKER_LOST, now, WORKER_LOST))
            if job.attempts >= job.max_attempts:
                new = replace(
                    job,
                    status=transition(job.status, Trigger.DEAD_LETTER),
                    error=replace(WORKER_LOST, reason="max_attempts_exceeded"),
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
                buried.append(new)
            else:
                # The lost attempt counts (attempts stays incremented); the job runs again now.
                new = replace(
                    job,
                    status=JobStatus.PENDING,
                    published=False,
                    error=WORKER_LOST,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
                requeued.append(new)
            self._put(new)
        return Recovered(requeued=tuple(requeued), buried=tuple(buried))

    async def mark_published(self, job_ids: Sequence[str]) -> None:
        self.writes["mark_published"] += 1
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and job.status is JobStatus.PENDING:
                self._put(replace(job, published=True))

    async def unpublished(self, *, before: float, now: float, limit: int) -> list[Job]:
        rows = [j for j in self._in(JobStatus.PENDING) if not j.published and j.updated_at < before]
        touched = [replace(j, updated_at=now) for j in sorted(rows, key=lambda j: j.updated_at)]
        for job in touched[:limit]:
            self._put(job)
        return touched[:limit]

    async def record_dead_messages(self, messages: Sequence[DeadMessage]) -> None:
        self.writes["record_dead_messages"] += 1
        for message in messages:
            self._dead_messages.append(replace(message, id=len(self._dead_messages) + 1))

    async def dead_messages(self, *, limit: int = 50, offset: int = 0) -> list[DeadMessage]:
        await anyio.lowlevel.checkpoint()
        newest_first = self._dead_messages[::-1]
        return newest_first[offset : offset + limit]

    async def purge(
        self, *, now: float, completed_before: float, failed_before: float, limit: int
    ) -> list[str]:
        self.writes["purge"] += 1
        doomed: list[str] = []
        for status in (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.FAILED):
            cutoff = failed_before if status is JobStatus.FAILED else completed_before
            # Jobs enter a terminal status in the order they finish: stop at the first one
            # inside its retention.
            for job_id in self._by_status[status]:
                finished = self._jobs[job_id].finished_at
                if len(doomed) >= limit or finished is None or finished >= cutoff:
                    break
                doomed.append(job_id)
        for job_id in doomed:
            self._drop(job_id)
        for key, entry in list(self._keys.items()):
            if entry.expires_at is not None and entry.expires_at < now:
                del self._keys[key]
        return doomed

    async def purge_dead_letters(self, query: DeadLetterQuery) -> list[str]:
        self.writes["purge_dead_letters"] += 1
        doomed = [j.id for j in self._in(JobStatus.FAILED) if _matches(j, query)][: query.limit]
        for job_id in doomed:
            self._drop(job_id)
        return doomed

    # ------------------------------------------------------------ reads

    async def list_dead_letters(self, query: DeadLetterQuery) -> list[Job]:
        await anyio.lowlevel.checkpoint()
        rows = [
            j
            for j in self._in(JobStatus.FAILED)
            if _matches(j, query)
            and (query.before is None or (j.finished_at or 0.0, j.id) < query.before)
        ]
        rows.sort(key=lambda j: (j.finished_at or 0.0, j.id), reverse=True)
        return rows[query.offset : query.offset + query.limit]

    async def count_dead_letters(self, query: DeadLetterQuery) -> int:
        await anyio.lowlevel.checkpoint()
        return sum(_matches(j, query) for j in self._in(JobStatus.FAILED))

    async def get(self, job_id: str) -> Job:
        return self.get_nowait(job_id)

    async def list(self, query: JobQuery) -> list[Job]:
        rows = [
            j
            for j in self._jobs.values()
            if (query.status is None or j.status is query.status)
            and (query.task is None or j.task == query.task)
            and (query.queue is None or j.queue == query.queue)
            and (query.before is None or (j.created_at, j.id) < query.before)
        ]
        rows.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return rows[query.offset : query.offset + query.limit]

    async def counts(self) -> Mapping[JobStatus, int]:
        return self.counts_nowait()

    async def count_status(self, status: JobStatus, *, limit: int) -> int:
        await anyio.lowlevel.checkpoint()
        return min(self._counts[status], max(limit, 0))

    async def check(self) -> None:
        await anyio.lowlevel.checkpoint()

    def counts_nowait(self) -> dict[JobStatus, int]:
        return {status: self._counts[status] for status in JobStatus}

    async def next_run_at(self) -> float | None:
        times = [j.run_at for j in self._in(JobStatus.SCHEDULED) if j.run_at is not None]
        return min(times, default=None)


def _ended(
    job: Job, outcome: Outcome, now: float, error: JobError | None = None
) -> tuple[Attempt, ...]:
    """``job``'s history with its running attempt ended as ``outcome``."""
    attempt = Attempt(
        number=job.attempts,
        series=job.replay_count,
        worker=job.lease_owner,
        started_at=job.started_at,
        finished_at=now,
        outcome=outcome,
        error=error,
    )
    return (*job.history, attempt)


def _matches(job: Job, query: DeadLetterQuery) -> bool:
    """The dead-letter filter of the PostgreSQL store (``dead_letter_filter``)."""
    error, finished = job.error, job.finished_at or 0.0
    if (
        (query.task is not None and job.task != query.task)
        or (query.queue is not None and job.queue != query.queue)
        or (query.error_code is not None and (error is None or error.code != query.error_code))
        or (query.since is not None and finished < query.since)
        or (query.until is not None and finished >= query.until)
    ):
        return False
    if query.text is None:
        return True
    needle = query.text.lower()
    texts = [error.message, error.type or ""] if error else []
    texts.append(json.dumps(job.payload))  # as PostgreSQL renders jsonb as text
    return job.id == query.text or any(needle in t.lower() for t in texts)


def _refuse_jobs(jobs: Sequence[Job], key: str | None) -> None:
    """Refuse what PostgreSQL refuses, as the PostgreSQL store does (``NotStorable``)."""
    for job in jobs:
        texts = [job.task, job.queue, key or ""]
        if any(text_problem(t) for t in texts) or find_unstorable(job.payload):
            raise NotStorable(f"the store refused a value of job {job.id}")


def _refuse_changes(changes: Sequence[Change]) -> None:
    for change in changes:
        texts: list[str] = []
        match change:
            case Complete():
                if find_unstorable_result(change.result):
                    raise NotStorable(f"the store refused the result of job {change.job_id}")
            case Reschedule() | Bury():
                error = change.error
                texts = [error.code, error.message, error.type or "", error.reason or ""]
            case Progress():
                texts = [change.message or ""]
        if any(text_problem(t) for t in texts):
            raise NotStorable(f"the store refused a value of job {change.job_id}")
