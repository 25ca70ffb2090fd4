"""What an attempt ended as: the internal outcomes the executor builds, and their public events.

An ``AttemptSucceeded``/``AttemptFailed``/``AttemptCancelled`` keeps the delivery tag, the log
lines and the full result inside the process; ``public_event`` is what the event bus carries
once the outcome is recorded.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

from taskflow.codec import encode_value
from taskflow.context import JobContext
from taskflow.errors import NotStorable
from taskflow.jobs import TRACEBACK_CHARS, JobError
from taskflow.messages import (
    EVENT_RESULT_BYTES,
    AttemptCancelled,
    AttemptFailed,
    AttemptSucceeded,
    JobCancelled,
    JobFailed,
    JobSucceeded,
    RunJob,
)
from taskflow.storable import clean_text, find_unstorable_result

MESSAGE_CHARS = 2000
"""An error message is cut to this many characters."""


@dataclass
class ThreadCall:
    """A sync task's run in its worker thread, observable after the awaiting task was cut:
    a thread cannot be cancelled, so a shutdown waits for it instead of giving the job back
    while it still runs (which would run the job twice under one attempt number)."""

    threaded: bool = False
    started: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    ctx: JobContext | None = None

    def run(self, fn: Any, payload: Any, ctx: JobContext) -> Any:
        self.ctx = ctx
        try:
            self.result = fn(payload, ctx)
            return self.result
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.done.set()


def succeeded(
    run: RunJob, *, started: float, at: float, result: Any, lines: tuple[str, ...]
) -> AttemptSucceeded | AttemptFailed:
    """The task returned ``result``; a result the store would refuse, or that is not JSON,
    fails the job for good instead."""
    refused = find_unstorable_result(result)
    if refused is not None:
        message = f"the task's {refused.where} {refused.why}"
        error = JobError(code="result_not_storable", message=clean_text(message)[:MESSAGE_CHARS])
        return failed(run, started=started, at=at, error=error, retryable=False, lines=lines)
    try:
        size = 4 if result is None else len(encode_value(result))
    except TypeError as exc:
        error = JobError(code="result_not_serializable", message=str(exc), type="TypeError")
        return failed(run, started=started, at=at, error=error, retryable=False, lines=lines)
    job = run.job
    return AttemptSucceeded(
        job_id=job.id,
        task=job.task,
        attempt=job.attempts,
        at=at,
        started_at=started,
        created_at=job.created_at,
        delivery_tag=run.delivery_tag,
        result=result,
        result_bytes=size,
        log_lines=lines,
    )


def failed(
    run: RunJob,
    *,
    started: float,
    at: float,
    error: JobError,
    retryable: bool = True,
    retry_delay: float | None = None,
    error_types: tuple[str, ...] = (),
    lines: tuple[str, ...] = (),
) -> AttemptFailed:
    job = run.job
    return AttemptFailed(
        job_id=job.id,
        task=job.task,
        attempt=job.attempts,
        max_attempts=job.max_attempts,
        at=at,
        started_at=started,
        error=error,
        error_types=error_types,
        retryable=retryable,
        retry_delay=retry_delay,
        delivery_tag=run.delivery_tag,
        log_lines=lines,
    )


def cancelled(run: RunJob, *, at: float, lines: tuple[str, ...]) -> AttemptCancelled:
    job = run.job
    return AttemptCancelled(
        job_id=job.id,
        task=job.task,
        attempt=job.attempts,
        at=at,
        delivery_tag=run.delivery_tag,
        log_lines=lines,
    )


def error_of(code: str, exc: BaseException) -> JobError:
    """A task's exception as a stored error: message cut, refused characters replaced."""
    message = str(exc) or type(exc).__name__
    return JobError(
        code=code,
        message=clean_text(message[:MESSAGE_CHARS]),
        type=clean_text(f"{type(exc).__module__}.{type(exc).__qualname__}"),
        traceback=traceback_of(exc),
    )


def traceback_of(exc: BaseException) -> str | None:
    """The end of ``exc``'s traceback (where it was raised), refused characters replaced."""
    if exc.__traceback__ is None:
        return None
    text = "".join(traceback.format_exception(exc))
    return clean_text(text[-TRACEBACK_CHARS:])


def not_storable(outcome: AttemptSucceeded, exc: NotStorable) -> AttemptFailed:
    """The store refused the result: the job fails for good with ``result_not_storable``."""
    return AttemptFailed(
        job_id=outcome.job_id,
        task=outcome.task,
        attempt=outcome.attempt,
        max_attempts=outcome.attempt,
        at=outcome.at,
        started_at=outcome.started_at,
        error=JobError(code="result_not_storable", message=clean_text(exc.message)[:MESSAGE_CHARS]),
        retryable=False,
        delivery_tag=outcome.delivery_tag,
        log_lines=outcome.log_lines,
    )


def public_succeeded(outcome: AttemptSucceeded) -> JobSucceeded:
    fits = outcome.result_bytes <= EVENT_RESULT_BYTES
    return JobSucceeded(
        job_id=outcome.job_id,
        task=outcome.task,
        attempt=outcome.attempt,
        at=outcome.at,
        started_at=outcome.started_at,
        created_at=outcome.created_at,
        result=outcome.result if fits else None,
        result_omitted=not fits,
    )


def public_failed(outcome: AttemptFailed, *, will_retry: bool) -> JobFailed:
    return JobFailed(
        job_id=outcome.job_id,
        task=outcome.task,
        attempt=outcome.attempt,
        max_attempts=outcome.max_attempts,
        at=outcome.at,
        started_at=outcome.started_at,
        error=replace(outcome.error, traceback=None),  # the store keeps it; events stay small
        will_retry=will_retry,
    )


def public_cancelled(outcome: AttemptCancelled) -> JobCancelled:
    return JobCancelled(
        job_id=outcome.job_id, task=outcome.task, attempt=outcome.attempt, at=outcome.at
    )
