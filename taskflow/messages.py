"""Every message in TaskFlow: commands (imperative), internal attempt outcomes, and the
public events (past tense).

All are frozen, slotted, keyword-only dataclasses; ``Message`` is their union, and
``taskflow.codec`` encodes any of them for the wire.

- **Commands** travel on in-memory streams between actors (``JobMessage`` also on the
  transport). ``CancelRequested`` is the one command broadcast on the event bus (a cancel must
  reach the process running the attempt).
- **Attempt outcomes** (``AttemptSucceeded``, ``AttemptFailed``, ``AttemptCancelled``) carry
  what only the process that ran the attempt needs: the delivery tag to settle, the captured
  log lines, the full result. They never leave the process and never go on the event bus.
- **Events** (``Event``) are the public schema: what later streams to browsers and is counted
  in metrics. They carry no delivery tag, no log lines, and a result only up to
  ``EVENT_RESULT_BYTES`` (``docs/architecture.md`` lists every field).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskflow.jobs import Job, JobError

# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """One job to submit. ``None`` fields take the task's defaults."""

    task: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    delay: float = 0.0
    max_attempts: int | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitJobs:
    """Store a batch of jobs durably, then publish the ones that are due.

    With an ``idempotency_key``, the same key and ``request_hash`` return the batch created
    first; the same key with another hash is an ``IdempotencyConflict``.
    """

    jobs: tuple[NewJob, ...]
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobMessage:
    """What travels on the transport: a reference to a stored job, never its state."""

    job_id: str
    task: str
    queue: str
    priority: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunJob:
    """Run one claimed attempt of ``job``; the delivery is settled after its outcome is stored."""

    job: Job
    delivery_tag: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterJob:
    """Move a job whose attempt failed for good to the dead letters."""

    failure: AttemptFailed
    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested:
    """Control: stop the running attempt of ``job_id`` wherever it runs."""

    job_id: str


# ---------------------------------------------------------------- attempt outcomes (internal)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptSucceeded:
    """The task returned; the result is to be stored, then the delivery acked."""

    job_id: str
    task: str
    attempt: int
    at: float
    started_at: float
    created_at: float
    delivery_tag: int
    result: Any = None
    result_bytes: int = 4
    """The size of the result encoded as JSON (``null`` is 4)."""
    log_lines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFailed:
    """The attempt failed. The retrier decides what happens next."""

    job_id: str
    task: str
    attempt: int
    max_attempts: int
    at: float
    started_at: float
    error: JobError
    delivery_tag: int
    error_types: tuple[str, ...] = ()
    retryable: bool = True
    retry_delay: float | None = None
    log_lines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptCancelled:
    """The attempt stopped because a user cancelled the job."""

    job_id: str
    task: str
    attempt: int
    at: float
    delivery_tag: int
    log_lines: tuple[str, ...] = ()


AttemptFinished = AttemptSucceeded | AttemptFailed | AttemptCancelled

EVENT_RESULT_BYTES = 1024
"""A ``JobSucceeded`` event carries the result only up to this size encoded; above it,
``result`` is ``None`` and ``result_omitted`` true (the job's record has it)."""

# ---------------------------------------------------------------- events (public)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSubmitted:
    job_id: str
    task: str
    queue: str
    at: float
    scheduled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted:
    job_id: str
    task: str
    attempt: int
    at: float
    queued_at: float
    queue: str = ""
    """The job's queue (empty from a publisher that predates the field)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobProgressed:
    job_id: str
    attempt: int
    percent: float
    message: str | None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSucceeded:
    job_id: str
    task: str
    attempt: int
    at: float
    started_at: float
    created_at: float
    result: Any = None
    """The result, if it encodes to at most ``EVENT_RESULT_BYTES``."""
    result_omitted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFailed:
    """An attempt failed and its outcome is recorded: ``will_retry`` says whether a
    ``JobScheduled`` follows (a retry) or a ``JobDeadLettered`` (the job gave up)."""

    job_id: str
    task: str
    attempt: int
    max_attempts: int
    at: float
    started_at: float
    error: JobError
    will_retry: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class JobCancelled:
    job_id: str
    task: str
    attempt: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class JobScheduled:
    job_id: str
    attempt: int
    run_at: float
    at: float
    error: JobError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobDeadLettered:
    job_id: str
    task: str
    attempt: int
    at: float
    error: JobError


@dataclass(frozen=True, slots=True, kw_only=True)
class JobReplayed:
    job_id: str
    replay_count: int
    at: float
    task: str = ""
    queue: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerHeartbeat:
    """A worker's vital signs, every few seconds, for cluster-wide metrics."""

    worker_id: str
    at: float
    interval: float
    queues: tuple[str, ...] = ()
    capacity: int = 0
    busy: int = 0
    started: int = 0
    finished: int = 0


Event = (
    JobSubmitted
    | JobStarted
    | JobProgressed
    | JobSucceeded
    | JobFailed
    | JobCancelled
    | JobScheduled
    | JobDeadLettered
    | JobReplayed
    | CancelRequested
    | WorkerHeartbeat
)
Command = NewJob | SubmitJobs | JobMessage | RunJob | DeadLetterJob | CancelRequested
Message = Command | AttemptFinished | Event

JOB_EVENTS: tuple[type[Event], ...] = (
    JobSubmitted,
    JobStarted,
    JobProgressed,
    JobSucceeded,
    JobFailed,
    JobCancelled,
    JobScheduled,
    JobDeadLettered,
    JobReplayed,
)
"""A job's public lifecycle events, in the order they may happen: what live streams carry
(not worker heartbeats, not cancel control)."""

ALL_MESSAGE_TYPES: tuple[type, ...] = (
    NewJob,
    SubmitJobs,
    JobMessage,
    RunJob,
    DeadLetterJob,
    CancelRequested,
    AttemptSucceeded,
    AttemptFailed,
    AttemptCancelled,
    *JOB_EVENTS,
    WorkerHeartbeat,
)

TERMINAL_EVENTS = (JobSucceeded, JobDeadLettered, JobCancelled)
