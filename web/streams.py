"""Live streams: every job's lifecycle (SSE), one job's (SSE and the seed's WebSocket), and
the metrics (SSE, what the dashboard reads).

Every stream starts with a snapshot of the store (``snapshot``), so a subscriber that
connects late still sees the current state, then sends each public lifecycle event as it
happens (``web.events``), a keep-alive after ``TASKFLOW_STREAM_KEEPALIVE`` seconds of
silence, and ``dropped`` (with how many) when it fell more than ``TASKFLOW_STREAM_BUFFER``
events behind; a job stream then sends a fresh snapshot. A job stream ends with ``end``
once the job is really terminal (a failed attempt that will be retried does not end it).
All streams end with ``end`` (``reason: shutting_down``) when the process stops.

Streams attach to the process's ``EventHub`` in memory: no broker queue or connection per
subscriber. SSE ids are ``<hub>.<seq>``; a reconnect with ``Last-Event-ID`` gets the events
it missed while the hub still holds them, else a new snapshot.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence

import anyio
from quart import Blueprint, Response, request, websocket
from quart_schema import document_querystring
from quart_schema import document_response as documented
from werkzeug.datastructures import MultiDict

from actors.hub import EventHub, Joined, Stamped
from actors.runtime import Runtime
from taskflow.keys import Scope
from web.api import API_PREFIX, errors
from web.auth import requires
from web.deflate import HEADER, Deflater, accepts_deflate
from web.events import (
    encode_json,
    encoded,
    iso,
    sse,
    sse_frame,
)
from web.frames import (
    ACTIVITY,
    Filter,
    Frame,
    Out,
    Pace,
    all_frames,
    job_frames,
    watch_frames,
)
from web.parsing import job_id, parse_status, query_name, single_arg
from web.responses import FieldErrors
from web.schemas import (
    EventStreamQuery,
    JobStreamQuery,
    MetricsResponse,
    MetricsStreamQuery,
    StreamEventOut,
    metrics_out,
)
from web.state import current_state

streams = Blueprint("streams", __name__, url_prefix=API_PREFIX)

RETRY_MS = 2000
"""How long an ``EventSource`` waits before it reconnects (the SSE ``retry`` field)."""
MAX_SNAPSHOT = 200


def parse_filter(args: MultiDict[str, str]) -> tuple[Filter, int]:
    """``task`` (or ``task_type``), ``queue`` (or ``queue_name``), ``status``, ``jobs``
    (comma-separated ids, repeatable, at most ``MAX_JOBS``), ``activity`` (a flag), and
    ``limit`` (jobs in the snapshot, 0..200, default 20). 422 ``validation_error`` naming
    the field."""
    errors = FieldErrors()
    status = parse_status(args, errors)
    jobs = _job_list(args, errors)
    activity = _activity_kinds(args, errors)
    task = query_name(args, ("task", "task_type", "taskType"), errors)
    queue = query_name(args, ("queue", "queue_name", "queueName"), errors)
    limit = 20
    raw_limit = single_arg(args, "limit", errors)
    if raw_limit is not None:
        try:
            limit = int(raw_limit.strip())
        except ValueError:
            errors.add("limit", "must be an integer")
        else:
            if not 0 <= limit <= MAX_SNAPSHOT:
                errors.add("limit", f"must be between 0 and {MAX_SNAPSHOT}")
    errors.raise_if_any("The query string is invalid.")
    return Filter(task=task, queue=queue, status=status, jobs=jobs, activity=activity), limit


MAX_JOBS = 200


def _activity_kinds(args: MultiDict[str, str], errors: FieldErrors) -> frozenset[str]:
    """``activity``: ``true`` (every kind), ``false``, or kinds separated by commas."""
    raw = single_arg(args, "activity", errors)
    if raw is None or not raw.strip():
        return frozenset()
    text = raw.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return frozenset(ACTIVITY)
    if text in ("false", "0", "no", "off"):
        return frozenset()
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(kinds - set(ACTIVITY))
    if unknown:
        errors.add("activity", f"true, or kinds among {', '.join(ACTIVITY)}; not {unknown[0]!r}")
    return kinds


def _job_list(args: MultiDict[str, str], errors: FieldErrors) -> frozenset[str] | None:
    raw = [part.strip() for value in args.getlist("jobs") for part in value.split(",")]
    if not args.getlist("jobs"):
        return None
    ids: set[str] = set()
    for part in filter(None, raw):
        try:
            ids.add(str(uuid.UUID(part)))
        except ValueError:
            errors.add("jobs", f"{part[:40]!r} is not a job id (a UUID)")
            return None
    if len(ids) > MAX_JOBS:
        errors.add("jobs", f"at most {MAX_JOBS} jobs")
    return frozenset(ids)


def _stream_response(body: AsyncIterator[bytes], *, deflated: bool = False) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if deflated:
        headers |= {"Content-Encoding": "deflate", "Vary": "Accept-Encoding"}
    response = Response(body, status=200, content_type="text/event-stream", headers=headers)
    response.timeout = None  # a stream lasts as long as its subscriber
    return response


def _last_event_id() -> str | None:
    return request.headers.get("Last-Event-ID") or request.args.get("lastEventId")


# ------------------------------------------------------------------ one job


@streams.get("/jobs/<task_id>/events")
@requires(Scope.READ)
@document_querystring(JobStreamQuery)
@documented(StreamEventOut, 200)
@errors(404, 422, 503)
async def job_events(task_id: str) -> Response:
    """One job's lifecycle as Server-Sent Events (``text/event-stream``): ``snapshot`` (the
    job as ``GET /jobs/{id}`` shows it), then ``submitted``, ``started``, ``progress``,
    ``failed``, ``scheduled``, ``succeeded``, ``dead_lettered``, ``cancelled``,
    ``replayed``, each a JSON object with ``event``, ``jobId``, ``status``, ``at``; ``end``
    once the job is terminal; ``dropped`` if the subscriber fell behind (a new ``snapshot``
    follows). Comments (``: keep-alive``) keep idle connections open. Reconnect with
    ``Last-Event-ID`` to resume. 404 ``job_not_found`` for an unknown job."""
    state = current_state()
    jid = job_id(task_id)
    await state.runtime.get(jid)  # 404 before the stream starts
    chunks = job_frames(state.runtime, jid, _last_event_id(), pace())
    return _event_stream(state.runtime.tree.hub, chunks)


def pace() -> Pace:
    settings = current_state().settings
    return Pace(keepalive=settings.stream_keepalive, buffer=settings.stream_buffer)


def _event_stream(hub: EventHub, chunks: AsyncIterator[Sequence[Out]]) -> Response:
    """The SSE response: compressed (``Content-Encoding: deflate``) when the client accepts
    it, as browsers do; the events' text is the same either way."""
    if accepts_deflate(request.headers.get("Accept-Encoding")):
        return _stream_response(_deflated(hub, chunks), deflated=True)
    return _stream_response(_sse(hub, chunks))


async def _sse(hub: EventHub, chunks: AsyncIterator[Sequence[Out]]) -> AsyncIterator[bytes]:
    """Batches as SSE bytes, one write each, after the reconnect delay."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    hub_id = hub.id
    async for chunk in chunks:
        yield b"".join(_text(item, hub_id) for item in chunk)


def _text(item: Out, hub_id: str) -> bytes:
    if isinstance(item, Joined):
        return item.data
    return sse_frame(item, hub_id) if isinstance(item, Stamped) else _control(item)


async def _deflated(hub: EventHub, chunks: AsyncIterator[Sequence[Out]]) -> AsyncIterator[bytes]:
    """``_sse`` as one zlib stream, a write per batch: a slice that the followers of every
    job share is compressed once for all of them (``web.deflate``)."""
    deflater = Deflater()
    yield HEADER + deflater.own(f"retry: {RETRY_MS}\n\n".encode())
    hub_id = hub.id
    async for chunk in chunks:
        out: list[bytes] = []
        own: list[bytes] = []
        for item in chunk:
            if isinstance(item, Joined):
                if own:
                    out.append(deflater.own(b"".join(own)))
                    own.clear()
                out.append(deflater.shared(item))
            else:
                own.append(_text(item, hub_id))
        if own:
            out.append(deflater.own(b"".join(own)))
        yield b"".join(out)
    yield deflater.end()


def _control(frame: Frame) -> bytes:
    kind, data, event_id = frame
    return b": keep-alive\n\n" if kind == "keepalive" else sse(kind, data, event_id)


# ------------------------------------------------------------------ every job


@streams.get("/events")
@requires(Scope.READ)
@document_querystring(EventStreamQuery)
@documented(StreamEventOut, 200)
@errors(422, 503)
async def all_events() -> Response:
    """Every job's lifecycle as Server-Sent Events, optionally filtered by ``task``,
    ``queue`` and ``status`` (the status an event leads to: ``status=failed`` keeps the
    events that leave a job failed). First a ``snapshot``: ``counts`` of jobs by status and
    the newest ``limit`` matching ``jobs``; then the events as ``/jobs/{id}/events`` sends
    them (every job's, at most 4 writes a second), keep-alives and ``dropped``. Never ends
    by itself (``end`` when the process stops). Reconnect with ``Last-Event-ID`` to resume.

    ``jobs=ID,ID,...`` (at most 200) follows only those jobs (the snapshot has them), at
    the cost of their events alone; ``activity=true`` (or some of ``submitted``,
    ``succeeded``, ``failed``, ``dead_lettered``, ``cancelled``, ``replayed``, separated by
    commas) adds an ``activity`` event at most every 250 ms, when one of them happened to
    any job, with how many since the last one: what a page needs to know that its table
    is out of date, without every event."""
    state = current_state()
    wanted, limit = parse_filter(request.args)
    if wanted.jobs is not None or wanted.activity:  # a watch: no firehose
        chunks = watch_frames(state.runtime, wanted, _last_event_id(), pace())
    else:
        chunks = all_frames(state.runtime, wanted, limit, _last_event_id(), pace())
    return _event_stream(state.runtime.tree.hub, chunks)


@streams.websocket("/jobs/<task_id>/status")
async def job_status_socket(task_id: str) -> None:
    """The seed's WebSocket: one JSON message per frame of ``/jobs/{id}/events`` (the
    ``snapshot`` first, then each event, ``{"event": "keepalive"}`` when idle, ``end``),
    then a normal close (1000). Refused before the handshake with the error envelope: 401
    or 403 (API keys, as for ``read``), 422 for a malformed id, 404 for an unknown job."""
    state = current_state()
    await state.auth.check_websocket(Scope.READ)
    jid = job_id(task_id)
    await state.runtime.get(jid)
    await websocket.accept()
    clock = state.runtime.resources.clock
    async for chunk in job_frames(state.runtime, jid, None, pace()):
        for item in chunk:
            if isinstance(item, Stamped):
                await websocket.send(encoded(item).decode())
            elif item[0] == "keepalive":
                body = {"event": "keepalive", "at": iso(clock.now())}
                await websocket.send(encode_json(body).decode())
            else:
                await websocket.send(item[1].decode())
    await websocket.close(1000)


# ------------------------------------------------------------------ metrics


@streams.get("/metrics/stream")
@requires(Scope.READ)
@document_querystring(MetricsStreamQuery)
@documented(MetricsResponse, 200)
@errors(422, 503)
async def metrics_stream() -> Response:
    """The metrics as Server-Sent Events: first ``history`` (a sample per second of the last
    10 minutes: ``at``, ``throughput``, ``failures``, ``p50``/``p95``/``p99`` end-to-end
    seconds, ``queue_depth``, ``dead_letters``, ``workers_online``), then ``metrics`` (the
    body of ``GET /metrics``) every ``interval`` seconds (0.2..10, default 1). What the
    dashboard reads."""
    state = current_state()
    errors = FieldErrors()
    interval = 1.0
    raw = single_arg(request.args, "interval", errors)
    if raw is not None:
        try:
            interval = float(raw.strip())
        except ValueError:
            errors.add("interval", "must be a number of seconds")
        else:
            if not 0.2 <= interval <= 10.0:
                errors.add("interval", "must be between 0.2 and 10 seconds")
    errors.raise_if_any("The query string is invalid.")
    return _stream_response(_metrics_events(state.runtime, interval))


async def _metrics_events(runtime: Runtime, interval: float) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    history = [dataclasses.asdict(point) for point in runtime.tree.metrics.history()]
    yield sse("history", encode_json({"points": history}))
    while True:
        cache = runtime.resources.cache.statistics()
        yield sse("metrics", encode_json(metrics_out(runtime.metrics(), cache)))
        if runtime.draining:
            yield sse("end", encode_json({"event": "end", "reason": "shutting_down"}))
            return
        await anyio.sleep(interval)
