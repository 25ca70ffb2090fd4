"""The public lifecycle events as the live streams show them (SSE, WebSocket).

Each event is one JSON object with ``event`` (its name), ``jobId``, ``status`` (the status the
job has once the event happened), ``at`` (ISO-8601 UTC) and the event's own fields, in
camelCase like the REST bodies. ``STATUS_OF`` is the one place that says which status each
event leads to: the pages and the stream filters use it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from actors.hub import Stamped
from taskflow.jobs import JobError, JobStatus
from taskflow.messages import (
    Event,
    JobCancelled,
    JobDeadLettered,
    JobFailed,
    JobProgressed,
    JobReplayed,
    JobScheduled,
    JobStarted,
    JobSubmitted,
    JobSucceeded,
)

NAMES: dict[type, str] = {
    JobSubmitted: "submitted",
    JobStarted: "started",
    JobProgressed: "progress",
    JobSucceeded: "succeeded",
    JobFailed: "failed",
    JobCancelled: "cancelled",
    JobScheduled: "scheduled",
    JobDeadLettered: "dead_lettered",
    JobReplayed: "replayed",
}
"""Each streamed event type's name (the SSE ``event:`` field and the JSON ``event``)."""

TERMINAL_NAMES = frozenset({"succeeded", "dead_lettered", "cancelled"})
"""Events after which a job stream checks the store and ends if the job is terminal."""


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


def status_after(event: Event) -> JobStatus:
    """The status the job has once ``event`` happened."""
    match event:
        case JobSubmitted(scheduled=scheduled):
            return JobStatus.SCHEDULED if scheduled else JobStatus.PENDING
        case JobStarted() | JobProgressed():
            return JobStatus.IN_PROGRESS
        case JobSucceeded():
            return JobStatus.COMPLETED
        case JobFailed(will_retry=will_retry):
            return JobStatus.SCHEDULED if will_retry else JobStatus.FAILED
        case JobCancelled():
            return JobStatus.CANCELLED
        case JobScheduled():
            return JobStatus.SCHEDULED
        case JobDeadLettered():
            return JobStatus.FAILED
        case JobReplayed():
            return JobStatus.PENDING
    raise ValueError(f"not a streamed event: {type(event).__name__}")


def _error(error: JobError) -> dict[str, Any]:
    return {
        "code": error.code,
        "message": error.message,
        "type": error.type,
        "reason": error.reason,
    }


def event_body(event: Event) -> dict[str, Any]:
    """``event`` as the JSON object a stream sends."""
    body: dict[str, Any] = {
        "event": NAMES[type(event)],
        "jobId": getattr(event, "job_id", None),
        "status": status_after(event).value,
        "at": iso(float(getattr(event, "at", 0.0))),
    }
    match event:
        case JobSubmitted():
            body.update(task=event.task, queue=event.queue)
        case JobStarted():
            body.update(task=event.task, queue=event.queue or None, attempt=event.attempt)
        case JobProgressed():
            body.update(attempt=event.attempt, progress=event.percent, message=event.message)
        case JobSucceeded():
            body.update(
                task=event.task,
                attempt=event.attempt,
                result=event.result,
                resultOmitted=event.result_omitted,
            )
        case JobFailed():
            body.update(
                task=event.task,
                attempt=event.attempt,
                maxAttempts=event.max_attempts,
                error=_error(event.error),
                willRetry=event.will_retry,
            )
        case JobCancelled():
            body.update(task=event.task, attempt=event.attempt)
        case JobScheduled():
            body.update(
                attempt=event.attempt,
                runAt=iso(event.run_at),
                error=_error(event.error) if event.error else None,
            )
        case JobDeadLettered():
            body.update(task=event.task, attempt=event.attempt, error=_error(event.error))
        case JobReplayed():
            body.update(
                task=event.task or None, queue=event.queue or None, replayCount=event.replay_count
            )
    return body


def _fallback(value: Any) -> Any:
    return str(value)


_encoder = msgspec.json.Encoder(enc_hook=_fallback)


def encode_json(body: Any) -> bytes:
    return _encoder.encode(body)


def sse(kind: str, data: bytes | str, event_id: str | None = None) -> bytes:
    """One Server-Sent Event: ``id``, ``event`` and the data (one ``data:`` per line)."""
    text = data.decode() if isinstance(data, bytes) else data
    head = f"id: {event_id}\n" if event_id is not None else ""
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"{head}event: {kind}\n{lines}\n".encode()


def encoded(item: Stamped) -> bytes:
    """The event's JSON, encoded once per event however many streams send it."""
    if item.data is None:
        item.data = encode_json(event_body(item.event))
    return item.data


def sse_frame(item: Stamped, hub_id: str) -> bytes:
    """The event's whole SSE frame (id ``<hub>.<seq>``, name, JSON), made once per event."""
    if item.frame is None:
        item.frame = sse(NAMES[type(item.event)], encoded(item), f"{hub_id}.{item.seq}")
    return item.frame
