"""``GET /api/v1/logs/{task_id}``: a job's log, as text, as JSON lines, or followed live (SSE).

The log is read from the LogStore (S3, files) and this process's spool; ``X-Log-Source``
says where from, ``X-Log-Complete: false`` that the store could not be read (S3 down: the
lines are safe in the workers' spools and appear once it returns). ``follow=true`` streams
the lines as Server-Sent Events while the job runs, also in another worker process (workers
ship running attempts' lines every ``flush_interval`` seconds), and ends with an ``end``
event once the job is terminal and its last lines are in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import anyio
import msgspec
from quart import Blueprint, Response, request
from quart_schema import document_querystring
from quart_schema import document_response as documented

from actors.runtime import Runtime
from taskflow import joblog
from taskflow.errors import JobNotFound
from taskflow.joblog import LogRecord
from taskflow.keys import Scope
from web.api import API_PREFIX, errors
from web.auth import requires
from web.dlq_parsing import parse_flag
from web.events import sse
from web.parsing import job_id, single_arg
from web.responses import FieldErrors
from web.state import current_state

logs = Blueprint("logs", __name__, url_prefix=API_PREFIX)

POLL = 0.5
"""Seconds between reads of the store while following."""
KEEPALIVE = 15.0
SETTLE = 3.0
"""After the job is terminal, how long to wait for its last lines (workers ship them
within ``flush_interval``) before the ``end`` event."""


class LogQuery(msgspec.Struct):
    """``format``: ``text`` (default; one line per record: time, level, attempt, message,
    key=value fields) or ``jsonl`` (the raw records). ``attempt``: one attempt only.
    ``follow``: stream new lines as Server-Sent Events until the job is terminal."""

    format: Literal["text", "jsonl"] = "text"
    attempt: int | None = None
    follow: bool = False


class LogHeaders(msgspec.Struct):
    """Where the log was read from, and whether the store answered (false: S3 down, only
    this process's spool is shown)."""

    x_log_source: str
    x_log_complete: Literal["true", "false"]


@logs.get("/logs/<task_id>")
@requires(Scope.READ)
@document_querystring(LogQuery)
@documented(list[LogRecord], 200, LogHeaders)
@errors(404, 422, 503)
async def job_log(task_id: str) -> Response:
    """One job's log: ``text/plain`` (or ``application/x-ndjson`` with ``format=jsonl``, one
    record per line as documented here);
    200 with an empty body when the job exists but has not logged yet; 404 ``job_not_found``.
    With ``follow=true``: ``text/event-stream``, one ``log`` event per line, then ``end``."""
    jid = job_id(task_id)
    fmt, attempt = _format(), _attempt()
    follow = parse_flag(request.args, "follow")
    runtime = current_state().runtime
    await runtime.get(jid)  # 404 job_not_found
    read = await runtime.read_log(jid)
    headers = {"X-Log-Source": read.source, "X-Log-Complete": str(read.complete).lower()}
    records = _pick(joblog.decode(read.data), attempt)
    if follow:
        response = Response(
            _follow(runtime, jid, fmt, attempt, len(records), records),
            status=200,
            content_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # a follow lasts as long as the job
        return response
    if fmt == "jsonl":
        body = joblog.encode(records)
        return Response(body, 200, content_type="application/x-ndjson", headers=headers)
    text = "".join(f"{line}\n" for line in joblog.render(records))
    return Response(text, 200, content_type="text/plain; charset=utf-8", headers=headers)


async def _follow(
    runtime: Runtime,
    jid: str,
    fmt: str,
    attempt: int | None,
    sent: int,
    first: list[LogRecord],
) -> AsyncIterator[bytes]:
    for item in first:
        yield sse("log", _show(item, fmt))
    quiet_since: float | None = None
    last_beat = anyio.current_time()
    while True:
        await anyio.sleep(POLL)
        try:
            job = await runtime.get(jid)
        except JobNotFound:  # purged while followed
            yield sse("end", msgspec.json.encode({"status": "deleted"}).decode())
            return
        records = _pick(joblog.decode((await runtime.read_log(jid)).data), attempt)
        fresh = records[sent:]
        sent = len(records)
        for item in fresh:
            yield sse("log", _show(item, fmt))
        now = anyio.current_time()
        if fresh:
            last_beat = now
        elif now - last_beat >= KEEPALIVE:
            last_beat = now
            yield b": keep-alive\n\n"
        if job.terminal:
            quiet_since = now if fresh or quiet_since is None else quiet_since
            if now - quiet_since >= SETTLE:
                body = {"status": job.status.value, "lines": sent}
                yield sse("end", msgspec.json.encode(body).decode())
                return


def _show(item: LogRecord, fmt: str) -> str:
    if fmt == "jsonl":
        return joblog.encode([item]).decode().rstrip("\n")
    return next(joblog.render([item]))


def _pick(records: list[LogRecord], attempt: int | None) -> list[LogRecord]:
    return records if attempt is None else [r for r in records if r.attempt == attempt]


def _format() -> str:
    errors = FieldErrors()
    raw = single_arg(request.args, "format", errors)
    fmt = (raw or "text").strip().lower()
    if fmt not in ("text", "jsonl"):
        errors.add("format", "must be text or jsonl")
    errors.raise_if_any("The query string is invalid.")
    return fmt


def _attempt() -> int | None:
    errors = FieldErrors()
    raw = single_arg(request.args, "attempt", errors)
    value = None
    if raw is not None:
        try:
            value = int(raw.strip())
        except ValueError:
            errors.add("attempt", "must be an integer")
        else:
            if not 0 <= value <= 10_000:
                errors.add("attempt", "must be between 0 and 10000")
                value = None
    errors.raise_if_any("The query string is invalid.")
    return value
