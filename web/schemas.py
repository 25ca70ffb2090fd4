"""The API's wire types: what responses are encoded from, and what the OpenAPI document shows.

Responses are built from these structs and encoded by msgspec, so the document and the real
bodies cannot drift apart. Request bodies are parsed by ``web.parsing`` (it accepts snake_case
and camelCase keys); the request structs here only document them.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from actors.metrics import MetricsSnapshot
from taskflow import limits
from taskflow.jobs import Attempt, Job, JobError, JobStatus
from taskflow.keys import ApiKey
from taskflow.ports import DeadMessage
from taskflow.ports.cache import CacheStats

Status = Literal["pending", "scheduled", "in_progress", "completed", "failed", "cancelled"]

# ------------------------------------------------------------------ requests (documentation)


class SubmitItem(msgspec.Struct, forbid_unknown_fields=True):
    """One job of a batch: its payload."""

    payload: dict[str, Any]


class SubmitRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A batch of jobs of one task type. Every key is also accepted in camelCase
    (``taskType``, ``queueName``, ``delaySeconds``, ``maxAttempts``, ``timeoutSeconds``)."""

    task_type: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_NAME)]
    data: Annotated[
        list[SubmitItem],
        msgspec.Meta(
            min_length=1,
            max_length=limits.MAX_BATCH,
            description="one job per item; at most TASKFLOW_MAX_BATCH (default 1000)",
        ),
    ]
    queue_name: Annotated[str, msgspec.Meta(max_length=limits.MAX_NAME)] | None = None
    priority: (
        Annotated[int, msgspec.Meta(ge=limits.MIN_PRIORITY, le=limits.MAX_PRIORITY)] | None
    ) = None
    delay_seconds: Annotated[float, msgspec.Meta(ge=0, le=limits.MAX_DELAY_SECONDS)] | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_ATTEMPTS)] | None = None
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=limits.MAX_TIMEOUT_SECONDS)] | None = (
        None
    )


class SubmitHeaders(msgspec.Struct):
    """Optional request headers of ``POST /api/v1/jobs``."""

    idempotency_key: str | None = None
    x_request_id: str | None = None


class ListJobsQuery(msgspec.Struct):
    """Filters and paging of ``GET /api/v1/jobs`` (newest first)."""

    status: Status | None = None
    task_type: str | None = None
    queue_name: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_PAGE)] = limits.DEFAULT_PAGE
    offset: Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_OFFSET)] = 0
    cursor: str | None = None


class GetJobQuery(msgspec.Struct):
    """``GET /api/v1/jobs/{id}``: ``wait`` holds the answer until the job is terminal."""

    wait: Annotated[float, msgspec.Meta(gt=0, le=limits.MAX_WAIT_SECONDS)] | None = None


class JobStreamQuery(msgspec.Struct):
    """``GET /api/v1/jobs/{id}/events``: ``lastEventId`` stands in for the ``Last-Event-ID``
    header (for clients that cannot set it)."""

    last_event_id: str | None = msgspec.field(default=None, name="lastEventId")


class EventStreamQuery(msgspec.Struct):
    """``GET /api/v1/events``: every filter given must match; ``limit``: jobs in the
    snapshot."""

    task: str | None = None
    queue: str | None = None
    status: Status | None = None
    jobs: str | None = None
    """Comma-separated job ids (at most 200): only their events."""
    activity: str | None = None
    """``true``, or kinds separated by commas: also ``activity`` events, with how many of
    them happened to any job (at most every 250 ms)."""
    limit: Annotated[int, msgspec.Meta(ge=0, le=200)] = 20
    last_event_id: str | None = msgspec.field(default=None, name="lastEventId")


class StreamEventOut(msgspec.Struct, rename="camel"):
    """The JSON ``data`` of each Server-Sent Event of ``/events`` and ``/jobs/{id}/events``
    (the response is ``text/event-stream``: ``id``, ``event`` and ``data`` lines per event).
    ``event`` is ``snapshot``, ``submitted``, ``started``, ``progress``, ``succeeded``,
    ``failed``, ``scheduled``, ``dead_lettered``, ``cancelled``, ``replayed``, ``dropped``,
    ``activity`` (counts per kind since the last one) or ``end``; ``status`` is the job's status once the event happened. A job's ``snapshot``
    has ``job`` (as ``GET /jobs/{id}``); the all-jobs ``snapshot`` has ``counts`` and
    ``jobs``; ``end`` has ``reason`` (``terminal``, ``deleted``, ``shutting_down``)."""

    event: str
    job_id: str | None = None
    status: Status | None = None
    at: str | None = None
    task: str | None = None
    queue: str | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    progress: float | None = None
    message: str | None = None
    result: Any = None
    result_omitted: bool | None = None
    error: dict[str, Any] | None = None
    will_retry: bool | None = None
    run_at: str | None = None
    replay_count: int | None = None
    job: JobOut | None = None
    counts: dict[str, int] | None = None
    jobs: list[JobOut] | None = None
    dropped: int | None = None
    total: int | None = None
    reason: str | None = None
    submitted: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    dead_lettered: int | None = None
    cancelled: int | None = None
    replayed: int | None = None


class MetricsStreamQuery(msgspec.Struct):
    """``GET /api/v1/metrics/stream``: seconds between ``metrics`` events."""

    interval: Annotated[float, msgspec.Meta(ge=0.2, le=10.0)] = 1.0


class PageQuery(msgspec.Struct):
    """Paging (newest first)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_PAGE)] = limits.DEFAULT_PAGE
    offset: Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_OFFSET)] = 0


# ------------------------------------------------------------------ responses


class SubmitResponse(msgspec.Struct, rename="camel"):
    """The ids of the stored jobs, in the order of ``data``."""

    task_ids: list[str]
    number_of_messages: int
    status: Literal["pending", "scheduled"]
    message: str


class JobErrorOut(msgspec.Struct, omit_defaults=True):
    """Why an attempt failed; ``reason`` says why a job was dead-lettered. ``traceback`` (the
    end of the task's traceback) is shown where one job is shown, not in listings."""

    code: str
    message: str
    type: str | None
    reason: str | None
    traceback: str | None = None


class AttemptOut(msgspec.Struct, rename="camel"):
    """One finished attempt: ``series`` counts replays (0 before any), ``durationSeconds``
    from its start to its end, ``outcome`` one of completed, retried, dead_lettered,
    cancelled, released (given back at shutdown, not counted), worker_lost."""

    number: int
    series: int
    worker: str | None
    started_at: datetime | None
    finished_at: datetime
    duration_seconds: float | None
    outcome: Literal[
        "completed", "retried", "dead_lettered", "cancelled", "released", "worker_lost"
    ]
    error: JobErrorOut | None


class ReplayOut(msgspec.Struct, rename="camel"):
    """One replay of the job: when, by whom, why, and whether it replaced the payload."""

    at: datetime
    by: str | None
    reason: str | None
    payload_changed: bool


class JobOut(msgspec.Struct, rename="camel"):
    """A job. Times are ISO-8601 UTC; ``taskId`` repeats ``id`` for seed clients."""

    id: str
    task_id: str
    task_type: str
    queue_name: str
    payload: dict[str, Any]
    status: Status
    priority: int
    attempts: int
    max_attempts: int
    progress: float
    progress_message: str | None
    result: Any
    error: JobErrorOut | None
    in_dlq: bool
    cancel_requested: bool
    replay_count: int
    original_error: JobErrorOut | None
    original_payload: dict[str, Any] | None
    """The payload as first submitted, once a replay replaced it."""
    attempt_history: list[AttemptOut]
    """Every finished attempt, oldest first (the running one is ``attempts``/``startedAt``)."""
    replays: list[ReplayOut]
    run_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    has_logs: bool | None = None
    """True once the job logged a line (``GET /api/v1/logs/{id}``); shown where one job is
    shown, null in listings."""
    log_url: str | None = None
    """With S3: a presigned link to the log object, valid 15 minutes."""


class JobPage(msgspec.Struct, rename="camel"):
    """A page of jobs, newest first. Pass ``nextCursor`` as ``cursor`` for the next page;
    it is null on the last page. There is no ``total``: counting is not cheap on a big store."""

    limit: int
    offset: int
    tasks: list[JobOut]
    next_cursor: str | None


class DeadLetterPage(msgspec.Struct, rename="camel"):
    """A page of dead letters (failed jobs), newest first by when they died. Pass
    ``nextCursor`` as ``cursor`` for the next page (stable while jobs die); ``nextOffset``
    works too. Both are null on the last page."""

    limit: int
    offset: int
    tasks: list[JobOut]
    next_cursor: str | None
    next_offset: int | None


class DeadMessageOut(msgspec.Struct, rename="camel"):
    """A transport message that named no job to run (undecodable, not a job reference, or an
    unknown job), kept with the reason it was dead-lettered."""

    id: int
    queue_name: str
    body: str
    reason: str
    dead_lettered_at: datetime


class DeadMessagePage(msgspec.Struct, rename="camel"):
    """A page of dead-lettered messages, newest first; ``nextOffset`` is null at the end."""

    limit: int
    offset: int
    messages: list[DeadMessageOut]
    next_offset: int | None


class ReplayOneResponse(msgspec.Struct, rename="camel"):
    """The dead letter, replayed: pending again with a new attempt series."""

    success: bool
    task_id: str
    job: JobOut


class ReplayAllResponse(msgspec.Struct, rename="camel"):
    """How many dead letters matched the filters and how many were replayed (0 when there
    were none); with ``dryRun`` nothing is replayed."""

    replayed: int
    matched: int
    dry_run: bool


class PurgeResponse(msgspec.Struct, rename="camel"):
    """How many dead letters matched the filters and how many were deleted, with their logs;
    with ``dryRun`` nothing is deleted."""

    purged: int
    matched: int
    dry_run: bool


class DeadLetterQueryDoc(msgspec.Struct):
    """Filters of the dead letters, combined (``GET``/``DELETE /api/v1/dlq``,
    ``POST /api/v1/jobs/action/retry``). ``since``/``until``: when the job was dead-lettered,
    ISO-8601 or seconds since the epoch. ``q``: a job id, or text (case-insensitive) in the
    last error's message or type or in the payload."""

    task_type: str | None = None
    queue_name: str | None = None
    error_code: str | None = None
    since: str | None = None
    until: str | None = None
    q: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class DeadLetterListQuery(DeadLetterQueryDoc):
    """The filters, and paging: ``cursor`` (the previous page's ``nextCursor``) or ``offset``."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_PAGE)] = limits.DEFAULT_PAGE
    offset: Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_OFFSET)] = 0
    cursor: str | None = None


class ReplayManyQuery(DeadLetterQueryDoc):
    """The filters; ``dry_run=true`` answers with the count only; ``limit`` replays at most
    that many in this call."""

    dry_run: bool = False
    limit: int | None = None


class PurgeQuery(DeadLetterQueryDoc):
    """The filters; without any, ``all=true`` is required. ``dry_run=true`` counts only."""

    dry_run: bool = False
    all: bool = False


class ReplayRequestBody(msgspec.Struct, forbid_unknown_fields=True):
    """Optional body of a replay: a corrected payload (one job only) and why."""

    payload: dict[str, Any] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class HealthResponse(msgspec.Struct):
    """Every dependency answered its probe. ``degraded``: an actor is retrying a call that
    keeps failing (``retrying`` names it), work waits meanwhile."""

    name: str
    status: Literal["ok", "degraded"]
    version: str
    checks: dict[str, str]
    retrying: dict[str, str] = msgspec.field(default_factory=dict)


class DashboardMetrics(msgspec.Struct, rename="camel"):
    """The seed's job counts: ``pending`` includes scheduled jobs, ``dlqCounts`` is the
    number of dead letters."""

    total_tasks: int
    pending: int
    in_progress: int
    completed: int
    failed: int
    dlq_counts: int


class SystemHealth(msgspec.Struct, rename="camel"):
    """The seed's health fields: messages ready in every queue, workers heard from lately."""

    messages_ready: int
    workers_online: int


class MetricsResponse(msgspec.Struct):
    """The metrics actor's latest snapshot (``MetricsSnapshot.to_dict()``); keys are snake_case
    because ``tasks`` and ``actors`` are keyed by task and actor names, except the seed's
    three fields (``avgProcessingTimeSeconds``, ``dashboardMetrics``, ``systemHealth``).
    Cluster-wide in distributed mode; job counts are refreshed about once a second, so many
    dashboards polling do not load the database."""

    at: float
    jobs_by_status: dict[str, int]
    tasks: dict[str, dict[str, Any]]
    totals: dict[str, Any]
    throughput_1s: float
    throughput_60s: float
    failures_1s: float
    failures_60s: float
    queue_wait: dict[str, Any]
    run_time: dict[str, Any]
    end_to_end: dict[str, Any]
    in_flight: int
    executor_utilisation: float
    actor_restarts: dict[str, int]
    actors: dict[str, dict[str, Any]]
    events_dropped: int
    workers: dict[str, dict[str, Any]]
    workers_online: int
    outcomes: dict[str, dict[str, dict[str, int]]]
    """task -> queue -> event kind -> count, since this process started."""
    queue_depth: dict[str, int]
    """Messages ready in each queue (the broker's count in distributed mode; a message of a
    batch carries up to 32 jobs)."""
    actors_running: list[str]
    """The actors of the API process's tree that are running now."""
    recent_failures: list[dict[str, Any]]
    """The last failed attempts (newest first): ``job_id``, ``task``, ``attempt``, ``at``,
    ``code``, ``message``, ``will_retry``."""
    avg_processing_time_seconds: float = msgspec.field(name="avgProcessingTimeSeconds")
    """The seed's field: the mean run time of successful attempts."""
    dashboard_metrics: DashboardMetrics = msgspec.field(name="dashboardMetrics")
    system_health: SystemHealth = msgspec.field(name="systemHealth")
    cache: dict[str, Any] = msgspec.field(default_factory=dict)
    """This process's cache: ``backend`` (``redis`` or ``memory``), ``hits``, ``misses``,
    ``puts``, ``invalidations``, ``bypassed`` (calls skipped while Redis was down)."""


class KeyCreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A new API key: its name and scopes (``read``, ``submit``, ``admin``; ``admin`` implies
    the others). ``scopes`` may also be one comma-separated string."""

    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    ]
    scopes: list[Literal["read", "submit", "admin"]]


class KeyOut(msgspec.Struct, rename="camel"):
    """An API key as the store knows it: never the key itself."""

    name: str
    scopes: list[str]
    created_at: datetime | None
    revoked_at: datetime | None
    active: bool


class KeyCreated(msgspec.Struct, rename="camel"):
    """The new key, shown this once: only its hash is kept."""

    name: str
    scopes: list[str]
    created_at: datetime | None
    key: str


class KeyList(msgspec.Struct):
    keys: list[KeyOut]


class KeysQuery(msgspec.Struct):
    revoked: bool = False
    """Also list revoked keys (after the live ones)."""


class CleanupResponse(msgspec.Struct):
    """Terminal jobs deleted because their retention had passed (with their logs)."""

    deleted: int


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """``code`` is stable and meant for programs; ``message`` is for people."""

    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorEnvelope(msgspec.Struct, kw_only=True):
    """Every error response has this shape."""

    status: Literal["error"] = "error"
    error: ErrorBody
    request_id: str
    path: str


DOCUMENTED: tuple[type[msgspec.Struct], ...] = (
    SubmitItem,
    SubmitRequest,
    SubmitResponse,
    JobErrorOut,
    JobOut,
    JobPage,
    DeadLetterPage,
    DeadMessageOut,
    DeadMessagePage,
    ReplayOneResponse,
    ReplayAllResponse,
    PurgeResponse,
    ReplayRequestBody,
    AttemptOut,
    ReplayOut,
    HealthResponse,
    MetricsResponse,
    DashboardMetrics,
    SystemHealth,
    KeyCreateRequest,
    KeyOut,
    KeyCreated,
    KeyList,
    CleanupResponse,
    ErrorBody,
    ErrorEnvelope,
)
"""Every struct a route documents; their nested structs become OpenAPI components."""


# ------------------------------------------------------------------ conversions


def timestamp(seconds: float | None) -> datetime | None:
    """Epoch seconds as an aware UTC datetime (clamped to what ``datetime`` can hold)."""
    if seconds is None or math.isnan(seconds):
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.max.replace(tzinfo=UTC) if seconds > 0 else datetime.min.replace(tzinfo=UTC)


def job_error_out(error: JobError | None, tracebacks: bool = False) -> JobErrorOut | None:
    if error is None:
        return None
    return JobErrorOut(
        code=error.code,
        message=error.message,
        type=error.type,
        reason=error.reason,
        traceback=error.traceback if tracebacks else None,
    )


def attempt_out(attempt: Attempt, tracebacks: bool = False) -> AttemptOut:
    return AttemptOut(
        number=attempt.number,
        series=attempt.series,
        worker=attempt.worker,
        started_at=timestamp(attempt.started_at),
        finished_at=timestamp(attempt.finished_at) or datetime.fromtimestamp(0, tz=UTC),
        duration_seconds=attempt.duration,
        outcome=attempt.outcome.value,
        error=job_error_out(attempt.error, tracebacks),
    )


def job_out(
    job: Job, *, tracebacks: bool = False, logs: tuple[bool, str | None] | None = None
) -> JobOut:
    """The job as the API shows it; ``tracebacks`` where one job is shown."""
    epoch = datetime.fromtimestamp(0, tz=UTC)
    return JobOut(
        id=job.id,
        task_id=job.id,
        task_type=job.task,
        queue_name=job.queue,
        payload=job.payload,
        status=JobStatus(job.status).value,
        priority=job.priority,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        progress=job.progress,
        progress_message=job.progress_message,
        result=job.result,
        error=job_error_out(job.error, tracebacks),
        in_dlq=job.in_dlq,
        cancel_requested=job.cancel_requested,
        replay_count=job.replay_count,
        original_error=job_error_out(job.original_error, tracebacks),
        original_payload=job.original_payload,
        attempt_history=[attempt_out(a, tracebacks) for a in job.history],
        replays=[
            ReplayOut(
                at=timestamp(r.at) or epoch,
                by=r.by,
                reason=r.reason,
                payload_changed=r.payload_changed,
            )
            for r in job.replays
        ],
        run_at=timestamp(job.run_at),
        created_at=timestamp(job.created_at) or epoch,
        started_at=timestamp(job.started_at),
        finished_at=timestamp(job.finished_at),
        updated_at=timestamp(job.updated_at) or epoch,
        has_logs=None if logs is None else logs[0],
        log_url=None if logs is None else logs[1],
    )


def dead_message_out(message: DeadMessage) -> DeadMessageOut:
    return DeadMessageOut(
        id=message.id or 0,
        queue_name=message.queue,
        body=message.body,
        reason=message.reason,
        dead_lettered_at=timestamp(message.at) or datetime.fromtimestamp(0, tz=UTC),
    )


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        name=key.name,
        scopes=sorted(s.value for s in key.scopes),
        created_at=timestamp(key.created_at),
        revoked_at=timestamp(key.revoked_at),
        active=key.active,
    )


def metrics_out(snapshot: MetricsSnapshot, cache: CacheStats | None = None) -> dict[str, Any]:
    """The snapshot as ``MetricsResponse`` documents it, the seed's fields added."""
    counts = snapshot.jobs_by_status
    dashboard = DashboardMetrics(
        total_tasks=sum(counts.values()),
        pending=counts.get("pending", 0) + counts.get("scheduled", 0),
        in_progress=counts.get("in_progress", 0),
        completed=counts.get("completed", 0),
        failed=counts.get("failed", 0),
        dlq_counts=counts.get("failed", 0),
    )
    health = SystemHealth(
        messages_ready=sum(snapshot.queue_depth.values()), workers_online=snapshot.workers_online
    )
    body = snapshot.to_dict()
    body["avgProcessingTimeSeconds"] = snapshot.run_time.mean
    body["dashboardMetrics"] = msgspec.to_builtins(dashboard)
    body["systemHealth"] = msgspec.to_builtins(health)
    body["cache"] = dataclasses.asdict(cache) if cache is not None else {}
    return body
