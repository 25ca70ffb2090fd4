"""The job model and its state machine.

The state machine is a pure function of (status, trigger): ``transition`` returns the new status
or raises ``InvalidTransition``. Stores use ``sources(trigger)`` as the guard of every state change
(``WHERE status IN (...)``), so the table below is the single source of truth for what may happen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from taskflow.errors import InvalidTransition


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.IN_PROGRESS})


class Trigger(enum.StrEnum):
    CLAIM = "claim"  # a worker takes the job: pending -> in_progress (attempts + 1)
    SUCCEED = "succeed"  # the attempt returned: in_progress -> completed
    RETRY = "retry"  # the attempt failed with attempts left: in_progress -> scheduled
    DEAD_LETTER = "dead_letter"  # no attempts left or not retryable: in_progress -> failed
    CANCEL = "cancel"  # pending/scheduled/in_progress -> cancelled
    PROMOTE = "promote"  # run_at is due: scheduled -> pending
    RELEASE = "release"  # given back without burning the attempt (shutdown): in_progress -> pending
    REPLAY = "replay"  # a dead letter runs again: failed -> pending


_S = JobStatus
_TABLE: dict[tuple[JobStatus, Trigger], JobStatus] = {
    (_S.PENDING, Trigger.CLAIM): _S.IN_PROGRESS,
    (_S.PENDING, Trigger.CANCEL): _S.CANCELLED,
    (_S.SCHEDULED, Trigger.PROMOTE): _S.PENDING,
    (_S.SCHEDULED, Trigger.CANCEL): _S.CANCELLED,
    (_S.IN_PROGRESS, Trigger.SUCCEED): _S.COMPLETED,
    (_S.IN_PROGRESS, Trigger.RETRY): _S.SCHEDULED,
    (_S.IN_PROGRESS, Trigger.DEAD_LETTER): _S.FAILED,
    (_S.IN_PROGRESS, Trigger.CANCEL): _S.CANCELLED,
    (_S.IN_PROGRESS, Trigger.RELEASE): _S.PENDING,
    (_S.FAILED, Trigger.REPLAY): _S.PENDING,
}


def transition(status: JobStatus, trigger: Trigger) -> JobStatus:
    """The status a job in ``status`` has after ``trigger``.

    Raises ``InvalidTransition`` (code ``invalid_transition``) when the change is not allowed.
    """
    try:
        return _TABLE[(status, trigger)]
    except KeyError:
        raise InvalidTransition(
            f"cannot {trigger.value} a job that is {status.value}",
            status=status.value,
            trigger=trigger.value,
        ) from None


def sources(trigger: Trigger) -> frozenset[JobStatus]:
    """The statuses from which ``trigger`` is allowed: the guard of a state-changing UPDATE."""
    return frozenset(s for (s, t) in _TABLE if t is trigger)


def legal_pairs() -> frozenset[tuple[JobStatus, Trigger]]:
    return frozenset(_TABLE)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobError:
    """Why an attempt failed. ``code`` is stable (``task_error``, ``timeout``, ...)."""

    code: str
    message: str
    type: str | None = None
    reason: str | None = None
    """Why the job was dead-lettered: ``max_attempts_exceeded`` or ``non_retryable``."""
    traceback: str | None = None
    """The end of the task's traceback (``TRACEBACK_CHARS`` at most), where there was one."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


TRACEBACK_CHARS = 2000
"""How much of a traceback an error keeps: its end, where the failing frame is."""


class Outcome(enum.StrEnum):
    """How an attempt ended (the attempt history)."""

    COMPLETED = "completed"
    RETRIED = "retried"  # failed, another attempt scheduled
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"
    RELEASED = "released"  # given back at shutdown, the attempt not counted
    WORKER_LOST = "worker_lost"  # its lease expired: the worker died or froze


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One finished attempt of a job. ``series`` is the replay it belongs to (0: the runs
    before any replay). The running attempt is not in the history: the job's ``attempts``,
    ``started_at`` and ``lease_owner`` describe it."""

    number: int
    series: int
    worker: str | None
    started_at: float | None
    finished_at: float
    outcome: Outcome
    error: JobError | None = None

    @property
    def duration(self) -> float | None:
        return None if self.started_at is None else max(0.0, self.finished_at - self.started_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayRecord:
    """One replay of a dead letter: when, by whom, why, and whether the payload changed."""

    at: float
    by: str | None = None
    reason: str | None = None
    payload_changed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A job as the store knows it. Times are seconds since the epoch (floats)."""

    id: str
    task: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    status: JobStatus = JobStatus.PENDING
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 3
    timeout: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    run_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: JobError | None = None
    progress: float = 0.0
    progress_message: str | None = None
    idempotency_key: str | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    published: bool = False
    """Outbox marker: the transport confirmed the message of this pending job."""
    replay_count: int = 0
    original_error: JobError | None = None
    original_payload: dict[str, Any] | None = None
    """The payload as first submitted, once a replay changed it."""
    history: tuple[Attempt, ...] = ()
    """Every finished attempt, oldest first."""
    replays: tuple[ReplayRecord, ...] = ()

    @property
    def in_dlq(self) -> bool:
        return self.status is JobStatus.FAILED

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL
