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

import functools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from quart import Blueprint, Response, request, websocket
from quart_schema import document_querystring
from quart_schema import document_response as documented
from werkzeug.datastructures import MultiDict

from actors.hub import EventHub, Listener, Stamped
from actors.runtime import Runtime
from taskflow.errors import JobNotFound
from taskflow.jobs import Job, JobStatus
from taskflow.keys import Scope
from taskflow.ports import JobQuery
from taskflow.streams import receive_ready
from web.api import API_PREFIX, errors
from web.auth import requires
from web.events import (
    NAMES,
    TERMINAL_NAMES,
    encode_json,
    encoded,
    iso,
    sse,
    sse_frame,
    status_after,
)
from web.parsing import job_id, parse_status, query_name, single_arg
from web.responses import FieldErrors
from web.schemas import (
    EventStreamQuery,
    JobStreamQuery,
    MetricsResponse,
    MetricsStreamQuery,
    StreamEventOut,
    job_out,
    metrics_out,
)
from web.state import current_state

streams = Blueprint("streams", __name__, url_prefix=API_PREFIX)

RETRY_MS = 2000
"""How long an ``EventSource`` waits before it reconnects (the SSE ``retry`` field)."""
MAX_SNAPSHOT = 200
BATCH = 4096
"""Events sent in one write at most (a burst goes out in a few writes, not one each)."""

Frame = tuple[str, bytes, str | None]
"""(event name, JSON data, SSE id or None)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """What a stream of every job keeps: each given field must match."""

    task: str | None = None
    queue: str | None = None
    status: JobStatus | None = None
    jobs: frozenset[str] | None = None
    """Only these jobs (then the stream costs only their events)."""
    activity: frozenset[str] = frozenset()
    """Also ``activity``: how many of these kinds happened (to any job) since the last one,
    at most every ``FLUSH_EVERY`` seconds, only when one of them did."""

    @property
    def any(self) -> bool:
        """A filter on the events themselves (``jobs`` picks the listener instead)."""
        return self.task is not None or self.queue is not None or self.status is not None


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


def _stream_response(body: AsyncIterator[bytes]) -> Response:
    response = Response(
        body,
        status=200,
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
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
    return _stream_response(_sse(state.runtime.tree.hub, chunks))


@dataclass(frozen=True, slots=True)
class Pace:
    """How a stream paces itself: keep-alive after ``keepalive`` idle seconds; at most
    ``buffer`` events waiting before some are dropped."""

    keepalive: float
    buffer: int


def pace() -> Pace:
    settings = current_state().settings
    return Pace(keepalive=settings.stream_keepalive, buffer=settings.stream_buffer)


async def job_frames(
    runtime: Runtime, jid: str, after: str | None, pacing: Pace
) -> AsyncIterator[Sequence[JobOut]]:
    """One job's stream, in batches of what goes out together (shared by SSE and the
    WebSocket)."""
    hub = runtime.tree.hub
    with hub.listen(job_id=jid, after=after, buffer=pacing.buffer) as listener:
        try:
            job = await runtime.get(jid)
        except JobNotFound:
            yield [_end("deleted", None)]
            return
        if not listener.resumed:
            yield [_snapshot_of(hub, job, listener.since)]
            if job.terminal:
                yield [_end("terminal", job)]
                return
        elif job.terminal:
            # Resumed after the job ended: what it missed, then the end (with a snapshot
            # if the terminal event was not among what it missed).
            backlog: list[JobOut] = [*receive_ready(listener.receive, hub.ring)]
            if not any(isinstance(i, Stamped) and _terminal(i) for i in backlog):
                backlog.append(_snapshot_of(hub, job, hub.last_seq))
            yield [*backlog, _end("terminal", job)]
            return
        async for items in _batches(listener, pacing.keepalive):
            if items is None:
                yield [KEEPALIVE]
                continue
            lost = listener.take_dropped()
            if lost:
                # Fell behind: say so, then the store's state instead of what is left.
                told = _lost(lost, listener.dropped_total)
                try:
                    job = await runtime.get(jid)
                except JobNotFound:
                    yield [told, _end("deleted", None)]
                    return
                chunk = [told, _snapshot_of(hub, job, items[-1].seq)]
                if job.terminal:
                    yield [*chunk, _end("terminal", job)]
                    return
                yield chunk
                continue
            for n, item in enumerate(items):
                if not _terminal(item):
                    continue
                try:
                    job = await runtime.get(jid)
                except JobNotFound:
                    yield [*items[: n + 1], _end("deleted", None)]
                    return
                if job.terminal:
                    yield [*items[: n + 1], _end("terminal", job)]
                    return
            yield list(items)
        yield [_end("shutting_down" if runtime.draining else "restarting", None)]


JobOut = Stamped | tuple[str, bytes, str | None]
Out = JobOut | bytes
"""What a stream sends: an event of the hub (its frame made once for every stream), a
frame of this stream's own (name, JSON data, SSE id or None), or SSE bytes ready to go
(a run of events joined once for every stream that sends it)."""


def _terminal(item: Stamped) -> bool:
    return NAMES[type(item.event)] in TERMINAL_NAMES


KEEPALIVE: Frame = ("keepalive", b"", None)


def _snapshot_of(hub: EventHub, job: Job, seq: int) -> Frame:
    hub.learn(job.id, job.task, job.queue)
    body = {"event": "snapshot", "status": job.status.value, "job": job_out(job)}
    return ("snapshot", encode_json(body), hub.event_id(seq))


def _end(reason: str, job: Job | None) -> Frame:
    body: dict[str, Any] = {"event": "end", "reason": reason}
    if job is not None:
        body["status"] = job.status.value
        body["jobId"] = job.id
    return ("end", encode_json(body), None)


async def _batches(listener: Listener, keepalive: float) -> AsyncIterator[list[Stamped] | None]:
    """What the listener has, in batches (one wait, then whatever else is ready); ``None``
    after ``keepalive`` seconds of silence. Ends when the hub closes the listener."""
    while True:
        first: Stamped | None = None
        with anyio.move_on_after(keepalive):
            try:
                first = await listener.receive.receive()
            except anyio.EndOfStream:
                return
        if first is None:
            yield None
            continue
        yield [first, *receive_ready(listener.receive, BATCH - 1)]


async def _sse(hub: EventHub, chunks: AsyncIterator[Sequence[Out]]) -> AsyncIterator[bytes]:
    """Batches as SSE bytes, one write each, after the reconnect delay."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    hub_id = hub.id
    async for chunk in chunks:
        yield b"".join(
            item
            if isinstance(item, bytes)
            else sse_frame(item, hub_id)
            if isinstance(item, Stamped)
            else _control(item)
            for item in chunk
        )


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
    return _stream_response(_sse(state.runtime.tree.hub, chunks))


async def all_frames(
    runtime: Runtime, wanted: Filter, limit: int, after: str | None, pacing: Pace
) -> AsyncIterator[Sequence[Out]]:
    """Every job's stream: a follower of the hub's ring (no buffer per stream), flushed at
    most every ``FLUSH_EVERY`` seconds, so a burst costs a stream a few writes, not one per
    event."""
    hub = runtime.tree.hub
    with hub.follow(after=after) as follower:
        if not follower.resumed:
            yield [await _overview(runtime, hub, wanted, limit, follower.since)]
        frame = functools.partial(sse_frame, hub_id=hub.id)
        while True:
            if not await follower.wait(pacing.keepalive):
                yield [KEEPALIVE]
                continue
            if follower.closed:
                break
            # Let a burst gather until the next tick, the same for every stream: one write
            # each, and streams at the same place share the bytes they send.
            now = anyio.current_time()
            await anyio.sleep(FLUSH_EVERY - now % FLUSH_EVERY)
            items, lost = follower.take(BATCH, pacing.buffer)
            chunk: list[Out] = [_lost(lost, follower.dropped_total)] if lost else []
            if wanted.any:
                chunk += [i for i in items if await _matches(runtime, hub, i, wanted)]
            elif items:
                chunk.append(hub.joined(items, frame))
            if chunk:
                yield chunk
        yield [_end("shutting_down" if runtime.draining else "restarting", None)]


FLUSH_EVERY = 0.25
"""An all-jobs stream writes at most this often, on ticks shared by every stream (a job's
own stream writes at once)."""


def _lost(now: int, total: int) -> Frame:
    return ("dropped", encode_json({"event": "dropped", "dropped": now, "total": total}), None)


ACTIVITY = ("submitted", "succeeded", "failed", "dead_lettered", "cancelled", "replayed")
"""The kinds an ``activity`` event counts."""


async def watch_frames(
    runtime: Runtime, wanted: Filter, after: str | None, pacing: Pace
) -> AsyncIterator[Sequence[Out]]:
    """The events of ``wanted.jobs`` only (a listener on those jobs), and with
    ``wanted.activity`` a count of what happened to every job at most every tick."""
    hub = runtime.tree.hub
    jobs = wanted.jobs if wanted.jobs is not None else frozenset()
    with hub.listen(job_ids=jobs, after=after, buffer=pacing.buffer) as listener:
        if not listener.resumed:
            yield [await _watched(runtime, hub, jobs, listener.since)]
        kinds = [kind for kind, name in NAMES.items() if name in wanted.activity]
        counted = hub.counts()
        seen = {kind: counted.get(kind, 0) for kind in kinds}
        quiet = anyio.current_time()
        while True:
            now = anyio.current_time()
            wait = FLUSH_EVERY - now % FLUSH_EVERY if wanted.activity else pacing.keepalive
            items: list[Stamped] = []
            with anyio.move_on_after(wait):
                try:
                    items = [await listener.receive.receive()]
                except anyio.EndOfStream:
                    break
            items += receive_ready(listener.receive, BATCH)
            chunk: list[Out] = []
            lost = listener.take_dropped()
            if lost:
                chunk.append(_lost(lost, listener.dropped_total))
            if wanted.any:
                chunk += [i for i in items if await _matches(runtime, hub, i, wanted)]
            else:
                chunk += items
            if kinds:
                counted = hub.counts()
                now_seen = {kind: counted.get(kind, 0) for kind in kinds}
                if now_seen != seen:
                    chunk.append(_activity(now_seen, seen, runtime))
                    seen = now_seen
            now = anyio.current_time()
            if chunk:
                quiet = now
                yield chunk
            elif now - quiet >= pacing.keepalive:
                quiet = now
                yield [KEEPALIVE]
        yield [_end("shutting_down" if runtime.draining else "restarting", None)]


def _activity(counts: Mapping[type, int], seen: Mapping[type, int], runtime: Runtime) -> Frame:
    """The counts that changed since ``seen``, under camelCase keys (``deadLettered``)."""
    body: dict[str, Any] = {"event": "activity", "at": iso(runtime.resources.clock.now())}
    for kind, count in counts.items():
        name = NAMES[kind]
        key = name.split("_")[0] + "".join(w.title() for w in name.split("_")[1:])
        body[key] = count - seen.get(kind, 0)
    return ("activity", encode_json(body), None)


async def _watched(runtime: Runtime, hub: EventHub, jobs: frozenset[str], seq: int) -> Frame:
    """The snapshot of a watch: the jobs as they are now (an unknown one is left out)."""
    found: list[Job] = []
    for jid in sorted(jobs):
        try:
            found.append(await runtime.get(jid))
        except JobNotFound:
            continue
    for job in found:
        hub.learn(job.id, job.task, job.queue)
    body = {
        "event": "snapshot",
        "at": iso(runtime.resources.clock.now()),
        "counts": dict(runtime.metrics().jobs_by_status),
        "jobs": [job_out(job) for job in found],
    }
    return ("snapshot", encode_json(body), hub.event_id(seq))


async def _overview(runtime: Runtime, hub: EventHub, wanted: Filter, limit: int, seq: int) -> Frame:
    jobs: list[Job] = []
    if limit:
        query = JobQuery(status=wanted.status, task=wanted.task, queue=wanted.queue, limit=limit)
        jobs = await runtime.list_jobs(query)
    for job in jobs:
        hub.learn(job.id, job.task, job.queue)
    counts = runtime.metrics().jobs_by_status
    body = {
        "event": "snapshot",
        "at": iso(runtime.resources.clock.now()),
        "counts": dict(counts),
        "jobs": [job_out(job) for job in jobs],
    }
    return ("snapshot", encode_json(body), hub.event_id(seq))


async def _matches(runtime: Runtime, hub: EventHub, item: Stamped, wanted: Filter) -> bool:
    event = item.event
    if wanted.status is not None and status_after(event) != wanted.status:
        return False
    if wanted.task is None and wanted.queue is None:
        return True
    jid: str = getattr(event, "job_id", "")
    task: str = getattr(event, "task", "") or ""
    queue: str = getattr(event, "queue", "") or ""
    known = hub.labels(jid)
    if known is not None:
        task, queue = task or known[0], queue or known[1]
    if (wanted.task is not None and not task) or (wanted.queue is not None and not queue):
        try:  # a job this process has not seen yet: read it once, every stream learns it
            job = await runtime.get(jid)
        except JobNotFound:
            return False
        hub.learn(job.id, job.task, job.queue)
        task, queue = job.task, job.queue
    if wanted.task is not None and task != wanted.task:
        return False
    return wanted.queue is None or queue == wanted.queue


# ------------------------------------------------------------------ the seed's WebSocket


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
    history = [
        {
            "at": p.at,
            "throughput": p.throughput,
            "failures": p.failures,
            "p50": p.p50,
            "p95": p.p95,
            "p99": p.p99,
            "queue_depth": dict(p.queue_depth),
            "dead_letters": p.dead_letters,
            "workers_online": p.workers_online,
        }
        for p in runtime.tree.metrics.history()
    ]
    yield sse("history", encode_json({"points": history}))
    while True:
        cache = runtime.resources.cache.statistics()
        yield sse("metrics", encode_json(metrics_out(runtime.metrics(), cache)))
        if runtime.draining:
            yield sse("end", encode_json({"event": "end", "reason": "shutting_down"}))
            return
        await anyio.sleep(interval)
