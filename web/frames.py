"""The frames of the live streams: what each kind of stream sends, in batches.

``job_frames`` (one job: SSE and the WebSocket), ``all_frames`` (every job: a follower of
the hub's ring, flushed on shared ticks), ``watch_frames`` (some jobs, and ``activity``
counts). Each yields batches of ``Out``: a hub event (its frame made once for every
stream), a frame of the stream's own (snapshot, dropped, activity, end, keep-alive), or
bytes joined once for every stream at the same place. ``web.streams`` turns them into SSE
or WebSocket messages.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from actors.hub import EventHub, Joined, Listener, Stamped
from actors.runtime import Runtime
from taskflow.errors import JobNotFound
from taskflow.jobs import Job, JobStatus
from taskflow.ports import JobQuery
from taskflow.streams import receive_ready
from web.events import (
    NAMES,
    TERMINAL_NAMES,
    encode_json,
    iso,
    sse_frame,
    status_after,
)
from web.schemas import (
    job_out,
)

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


@dataclass(frozen=True, slots=True)
class Pace:
    """How a stream paces itself: keep-alive after ``keepalive`` idle seconds; at most
    ``buffer`` events waiting before some are dropped."""

    keepalive: float
    buffer: int


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
Out = JobOut | Joined
"""What a stream sends: an event of the hub (its frame made once for every stream), a
frame of this stream's own (name, JSON data, SSE id or None), or a ``Joined`` slice
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
            # each, and streams at the same place share the bytes they send. What arrives
            # while it waits for the tick is not the stream falling behind: the buffer
            # bounds what gathered before (while its last write was going out).
            woke = hub.last_seq
            now = anyio.current_time()
            await anyio.sleep(FLUSH_EVERY - now % FLUSH_EVERY)
            items, lost = follower.take(BATCH, pacing.buffer + hub.last_seq - woke)
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
    ``wanted.activity`` a count of what happened to every job. It sleeps until the hub takes
    a batch from the bus (its jobs' events and the counts only change then), then until
    the next shared tick: an idle watch costs nothing, a busy one a write per tick."""
    hub = runtime.tree.hub
    jobs = wanted.jobs if wanted.jobs is not None else frozenset()
    with hub.listen(job_ids=jobs, after=after, buffer=pacing.buffer) as listener:
        if not listener.resumed:
            yield [await _watched(runtime, hub, jobs, listener.since)]
        kinds = [kind for kind, name in NAMES.items() if name in wanted.activity]
        counted = hub.counts()
        seen = {kind: counted.get(kind, 0) for kind in kinds}
        backlog = listener.receive.statistics().current_buffer_used > 0  # resumed events
        quiet = anyio.current_time()
        while True:
            if not backlog:
                with anyio.move_on_after(pacing.keepalive) as idle:
                    await hub.changed.wait()
                if idle.cancelled_caught or anyio.current_time() - quiet >= pacing.keepalive:
                    quiet = anyio.current_time()
                    yield [KEEPALIVE]
                    if idle.cancelled_caught:
                        continue
            backlog = False
            now = anyio.current_time()
            await anyio.sleep(FLUSH_EVERY - now % FLUSH_EVERY)
            items = receive_ready(listener.receive, BATCH)
            if not items and listener.receive.statistics().open_send_streams == 0:
                break  # the hub stopped
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
            if chunk:
                quiet = anyio.current_time()
                yield chunk
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
    return _jobs_snapshot(runtime, hub, found, seq)


async def _overview(runtime: Runtime, hub: EventHub, wanted: Filter, limit: int, seq: int) -> Frame:
    """The snapshot of every job's stream: the newest ``limit`` jobs that match."""
    jobs: list[Job] = []
    if limit:
        query = JobQuery(status=wanted.status, task=wanted.task, queue=wanted.queue, limit=limit)
        jobs = await runtime.list_jobs(query)
    return _jobs_snapshot(runtime, hub, jobs, seq)


def _jobs_snapshot(runtime: Runtime, hub: EventHub, jobs: list[Job], seq: int) -> Frame:
    """``snapshot``: the job counts by status and ``jobs``, as of the event numbered
    ``seq`` (the stream's events follow it)."""
    for job in jobs:
        hub.learn(job.id, job.task, job.queue)
    body = {
        "event": "snapshot",
        "at": iso(runtime.resources.clock.now()),
        "counts": dict(runtime.metrics().jobs_by_status),
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
