"""MemoryJobStore: the in-memory twin of the JobStore port, with inspection helpers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import anyio

from taskflow.errors import IdempotencyConflict, JobNotFound
from taskflow.jobs import TERMINAL, Job, JobError, JobStatus, Trigger, sources, transition
from taskflow.ports.store import (
    Bury,
    Change,
    Complete,
    Inserted,
    JobQuery,
    MarkCancelled,
    Progress,
    Recovered,
    Release,
    Renew,
    Reschedule,
)

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
        self.writes = Counter[str]()
        """How many store calls of each kind were made (to check batching)."""

    # ------------------------------------------------------------ inspection

    @property
    def jobs(self) -> Mapping[str, Job]:
        return dict(self._jobs)

    def dead_letters(self) -> list[Job]:
        return sorted(
            (j for j in self._jobs.values() if j.status is JobStatus.FAILED),
            key=lambda j: j.updated_at,
        )

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
            self._jobs[job.id] = replace(job, published=False)
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
            self._jobs[job_id] = new
            claimed.append(new)
        return claimed

    async def settle(self, changes: Sequence[Change], *, now: float) -> list[Job | None]:
        self.writes["settle"] += 1
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
                    status=JobStatus.SCHEDULED,
                    run_at=change.run_at,
                    error=change.error,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            case Bury():
                new = replace(
                    job,
                    status=JobStatus.FAILED,
                    error=change.error,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            case MarkCancelled():
                new = replace(
                    job,
                    status=JobStatus.CANCELLED,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            case Release():
                new = replace(
                    job,
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
        self._jobs[job.id] = new
        return new

    async def promote_due(self, *, now: float, limit: int) -> list[Job]:
        self.writes["promote_due"] += 1
        due = sorted(
            (
                j
                for j in self._jobs.values()
                if j.status is JobStatus.SCHEDULED and (j.run_at or 0.0) <= now
            ),
            key=lambda j: (j.run_at or 0.0, j.created_at),
        )[:limit]
        promoted = []
        for job in due:
            new = replace(
                job, status=transition(job.status, Trigger.PROMOTE), published=False, updated_at=now
            )
            self._jobs[job.id] = new
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
        self._jobs[job_id] = new
        return new

    async def replay(self, job_ids: Sequence[str], *, now: float) -> list[Job]:
        self.writes["replay"] += 1
        replayed = []
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is None or job.status not in sources(Trigger.REPLAY):
                continue
            new = replace(
                job,
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
            self._jobs[job_id] = new
            replayed.append(new)
        return replayed

    async def recover_expired(self, *, now: float, limit: int) -> Recovered:
        self.writes["recover_expired"] += 1
        expired = sorted(
            (
                j
                for j in self._jobs.values()
                if j.status is JobStatus.IN_PROGRESS
                and j.lease_expires_at is not None
                and j.lease_expires_at < now
            ),
            key=lambda j: j.lease_expires_at or 0.0,
        )[:limit]
        requeued, buried = [], []
        for job in expired:
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
            self._jobs[job.id] = new
        return Recovered(requeued=tuple(requeued), buried=tuple(buried))

    async def mark_published(self, job_ids: Sequence[str]) -> None:
        self.writes["mark_published"] += 1
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and job.status is JobStatus.PENDING:
                self._jobs[job_id] = replace(job, published=True)

    async def unpublished(self, *, before: float, limit: int) -> list[Job]:
        rows = [
            j
            for j in self._jobs.values()
            if j.status is JobStatus.PENDING and not j.published and j.updated_at < before
        ]
        return sorted(rows, key=lambda j: j.updated_at)[:limit]

    async def purge(
        self, *, now: float, completed_before: float, failed_before: float, limit: int
    ) -> list[str]:
        self.writes["purge"] += 1
        doomed: list[str] = []
        for job in self._jobs.values():
            if job.status not in TERMINAL or job.finished_at is None:
                continue
            cutoff = failed_before if job.status is JobStatus.FAILED else completed_before
            if len(doomed) >= limit:
                break
            if job.finished_at < cutoff:
                doomed.append(job.id)
        for job_id in doomed:
            del self._jobs[job_id]
        for key, entry in list(self._keys.items()):
            if entry.expires_at is not None and entry.expires_at < now:
                del self._keys[key]
        return doomed

    # ------------------------------------------------------------ reads

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

    async def check(self) -> None:
        await anyio.lowlevel.checkpoint()

    def counts_nowait(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        for job in self._jobs.values():
            counts[job.status] += 1
        return counts

    async def next_run_at(self) -> float | None:
        times = [
            j.run_at
            for j in self._jobs.values()
            if j.status is JobStatus.SCHEDULED and j.run_at is not None
        ]
        return min(times, default=None)
