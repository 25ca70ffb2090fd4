"""The JobStore port: durable job state. Every change is fenced by status and attempt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from taskflow.jobs import Job, JobError, JobStatus, Trigger

# ------------------------------------------------------------- fenced changes


@dataclass(frozen=True, slots=True, kw_only=True)
class Complete:
    job_id: str
    attempt: int
    result: Any = None
    trigger = Trigger.SUCCEED


@dataclass(frozen=True, slots=True, kw_only=True)
class Reschedule:
    job_id: str
    attempt: int
    run_at: float
    error: JobError
    trigger = Trigger.RETRY


@dataclass(frozen=True, slots=True, kw_only=True)
class Bury:
    """Dead-letter the job."""

    job_id: str
    attempt: int
    error: JobError
    trigger = Trigger.DEAD_LETTER


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkCancelled:
    job_id: str
    attempt: int
    trigger = Trigger.CANCEL


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """Give the job back to the queue without burning the attempt (graceful shutdown)."""

    job_id: str
    attempt: int
    trigger = Trigger.RELEASE


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    job_id: str
    attempt: int
    percent: float
    message: str | None = None
    trigger = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Renew:
    """Extend the lease of an attempt that is still running."""

    job_id: str
    attempt: int
    until: float
    trigger = None


Change = Complete | Reschedule | Bury | MarkCancelled | Release | Progress | Renew


@dataclass(frozen=True, slots=True, kw_only=True)
class Inserted:
    job_ids: tuple[str, ...]
    replayed: bool = False
    """True when an idempotency key matched an earlier identical request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered:
    """What a lease sweep did: jobs due to run again, and jobs that ran out of attempts."""

    requeued: tuple[Job, ...] = ()
    buried: tuple[Job, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadMessage:
    """A transport message that could not become a job run: undecodable, not a job
    reference, or naming no stored job. Kept with the reason, visible through the API."""

    queue: str
    body: str
    """The raw body as text (undecodable bytes replaced), cut to 4 KiB."""
    reason: str
    at: float
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    status: JobStatus | None = None
    task: str | None = None
    queue: str | None = None
    limit: int = 50
    offset: int = 0
    before: tuple[float, str] | None = None
    """Keyset cursor: only jobs older than (created_at, id), for stable paging."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterQuery:
    """Filters of the dead letters (all combined), newest first by when they died."""

    task: str | None = None
    queue: str | None = None
    error_code: str | None = None
    since: float | None = None
    """Dead-lettered at or after."""
    until: float | None = None
    """Dead-lettered before."""
    text: str | None = None
    """A job id, or a case-insensitive substring of the error message or type or the payload."""
    limit: int = 50
    offset: int = 0
    before: tuple[float, str] | None = None
    """Keyset cursor: only dead letters older than (finished_at, id)."""

    @property
    def filtered(self) -> bool:
        """Whether any filter narrows the set (paging does not)."""
        fields = (self.task, self.queue, self.error_code, self.since, self.until, self.text)
        return any(f is not None for f in fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayRequest:
    """Who replays, why, and (for one job) a corrected payload."""

    by: str | None = None
    reason: str | None = None
    payload: dict[str, Any] | None = None


class JobStore(Protocol):
    """Writes. Each method is one round trip for the whole batch it is given."""

    async def insert(
        self,
        jobs: Sequence[Job],
        *,
        now: float,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        key_expires_at: float | None = None,
    ) -> Inserted:
        """Store new jobs (``pending`` or ``scheduled``), atomically with the idempotency key."""
        ...

    async def claim(
        self, job_ids: Sequence[str], *, owner: str, now: float, lease_until: float
    ) -> list[Job]:
        """pending -> in_progress (attempts + 1) for those of ``job_ids`` that are pending."""
        ...

    async def settle(self, changes: Sequence[Change], *, now: float) -> list[Job | None]:
        """Apply fenced changes; ``None`` where the fence (status, attempt) did not hold."""
        ...

    async def promote_due(self, *, now: float, limit: int) -> list[Job]:
        """scheduled -> pending for jobs whose ``run_at`` is due, oldest first."""
        ...

    async def cancel(self, job_id: str, *, now: float) -> Job:
        """pending/scheduled -> cancelled; in_progress -> ``cancel_requested`` (the executor
        settles it). Raises ``JobNotFound`` or ``InvalidTransition`` for a terminal job."""
        ...

    async def replay(
        self, job_ids: Sequence[str], *, now: float, request: ReplayRequest | None = None
    ) -> list[Job]:
        """failed -> pending, a new attempt series; lineage (replay_count, original_error, a
        replay record, and the first payload if ``request.payload`` replaces it) kept."""
        ...

    async def purge_dead_letters(self, query: DeadLetterQuery) -> list[str]:
        """Delete up to ``query.limit`` dead letters matching ``query``; the deleted ids."""
        ...

    async def recover_expired(
        self, *, now: float, limit: int, owners: Sequence[str] = ()
    ) -> Recovered:
        """Jobs whose lease expired, or whose lease is held by one of ``owners`` (processes
        known to be gone): requeued (an attempt counted, ``worker_lost``) or buried."""
        ...

    async def mark_published(self, job_ids: Sequence[str]) -> None:
        """The transport confirmed these pending jobs' messages (the outbox marker)."""
        ...

    async def unpublished(self, *, before: float, now: float, limit: int) -> list[Job]:
        """Pending jobs not confirmed by the transport and unchanged since ``before``:
        what a crash between commit and publish left behind (oldest first). They are touched
        (``updated_at = now``), so a concurrent sweeper in another process skips them."""
        ...

    async def record_dead_messages(self, messages: Sequence[DeadMessage]) -> None:
        """Keep messages the dispatcher dead-lettered, with their reasons."""
        ...

    async def purge(
        self, *, now: float, completed_before: float, failed_before: float, limit: int
    ) -> list[str]:
        """Delete terminal jobs older than their retention; returns the deleted ids."""
        ...


class JobQueries(Protocol):
    """Reads."""

    async def dead_messages(self, *, limit: int = 50, offset: int = 0) -> list[DeadMessage]:
        """Dead-lettered transport messages, newest first."""
        ...

    async def get(self, job_id: str) -> Job:
        """Raises ``JobNotFound``."""
        ...

    async def list_dead_letters(self, query: DeadLetterQuery) -> list[Job]:
        """Dead letters matching ``query``, newest first (by ``finished_at``, then id)."""
        ...

    async def count_dead_letters(self, query: DeadLetterQuery) -> int:
        """How many dead letters match ``query`` (its paging ignored)."""
        ...

    async def list(self, query: JobQuery) -> list[Job]:
        """Newest first."""
        ...

    async def counts(self) -> Mapping[JobStatus, int]: ...

    async def count_status(self, status: JobStatus, *, limit: int) -> int:
        """Jobs with ``status``, counted up to ``limit`` (admission control's backlog: the
        cost stays bounded however long the queue)."""
        ...

    async def check(self) -> None:
        """Raise ``StoreError`` if the store cannot answer (readiness probe)."""
        ...

    async def next_run_at(self) -> float | None:
        """The earliest ``run_at`` among scheduled jobs."""
        ...


class JobStoreAndQueries(JobStore, JobQueries, Protocol):
    """One adapter that provides both ports (every store does)."""
