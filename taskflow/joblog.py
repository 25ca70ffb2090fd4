"""Per-job log records: JSON lines, one per record, and their rendering for people.

A record is ``{"ts", "level", "attempt", "message", "fields", "source"}``: ``source`` is
``task`` (``ctx.log``), ``logging:<logger name>`` (stdlib ``logging`` inside the task) or
``taskflow`` (lifecycle lines: started, retry scheduled, failed with the traceback, ...).
The LogStore keeps the JSON lines as they are (``?format=jsonl``); ``render`` makes the
text view (``time level [attempt k] message key=value ...``).
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

Notes = Callable[[str, int, str, str], None]
"""``notes(job_id, attempt, level, message)``: a lifecycle line for a job's log (the log
shipper's ``note``), for the actors that decide what happens to a job between attempts."""

LEVELS = ("debug", "info", "warning", "error", "critical")
TRUNCATED = "log truncated: TASKFLOW_MAX_LOG_BYTES reached, later lines of this job are dropped"
MAX_LINE_CHARS = 16_000
"""A message or a field value is cut to this many characters."""


class LogRecord(msgspec.Struct, frozen=True):
    ts: float
    level: str
    attempt: int
    message: str
    fields: dict[str, Any] = {}
    source: str = "task"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LogRecord)


def record(
    level: str, attempt: int, message: str, *, source: str, ts: float, **fields: Any
) -> LogRecord:
    """A record with its text cut and its fields made JSON (``repr`` of what is not)."""
    return LogRecord(
        ts=ts,
        level=level if level in LEVELS else "info",
        attempt=attempt,
        message=_cut(str(message)),
        fields={_cut(str(k)): _plain(v) for k, v in fields.items()},
        source=source,
    )


def encode(records: Iterable[LogRecord]) -> bytes:
    """JSON lines, each ending with a newline."""
    return b"".join(_encoder.encode(r) + b"\n" for r in records)


def decode(data: bytes) -> list[LogRecord]:
    """The records of ``data``; a line that is not a record (a torn write) is skipped."""
    out = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            out.append(_decoder.decode(line))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out


def render(records: Iterable[LogRecord]) -> Iterator[str]:
    """One line per record: ``2026-12-02T19:55:52.123Z INFO  [attempt 1] message k=v``."""
    for r in records:
        when = datetime.fromtimestamp(r.ts, UTC).isoformat(timespec="milliseconds")
        extras = " ".join(f"{k}={_show(v)}" for k, v in r.fields.items())
        where = "" if r.source in ("task", "taskflow") else f" ({r.source})"
        text = f"{when.replace('+00:00', 'Z')} {r.level.upper():<7} [attempt {r.attempt}] "
        text += r.message.replace("\n", "\n    ") + where + (f" {extras}" if extras else "")
        yield text


@dataclass(eq=False)
class JobLog:
    """The records of one running attempt, written from the event loop and from threads;
    ``take`` hands the new ones to the log shipper (while the attempt runs, and at its end)."""

    job_id: str
    attempt: int
    max_records: int = 100_000
    _records: list[LogRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    dropped: int = 0

    def add(self, item: LogRecord) -> None:
        with self._lock:
            if len(self._records) < self.max_records:
                self._records.append(item)
            else:
                self.dropped += 1

    def take(self) -> list[LogRecord]:
        with self._lock:
            taken, self._records = self._records, []
        return taken


def _cut(text: str) -> str:
    """At most ``MAX_LINE_CHARS``, a lone surrogate kept as its escape (JSON cannot hold it)."""
    text = text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + "..."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _cut(value)
    return _cut(repr(value))


def _show(value: Any) -> str:
    return value if isinstance(value, str) and value and " " not in value else repr(value)


CURRENT: ContextVar[JobLog | None] = ContextVar("taskflow_job_log", default=None)
"""The log of the attempt running in this context (set by the executor around the task call;
worker threads of ``def`` tasks inherit it). A ContextVar is per task and per thread by
nature: this is not shared state."""


class TaskLogHandler(logging.Handler):
    """Routes stdlib ``logging`` records emitted inside a task to its job's log. TaskFlow's
    own loggers (``taskflow.*``) are left out: ``ctx.log`` is captured at its source."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.users = 0

    def emit(self, rec: logging.LogRecord) -> None:
        journal = CURRENT.get()
        if journal is None or rec.name == "taskflow" or rec.name.startswith("taskflow."):
            return
        try:
            fields: dict[str, Any] = {}
            if rec.exc_info and rec.exc_info[1] is not None:
                fields["exc"] = "".join(traceback.format_exception(rec.exc_info[1]))[-4000:]
            journal.add(
                record(
                    rec.levelname.lower(),
                    journal.attempt,
                    rec.getMessage(),
                    source=f"logging:{rec.name}",
                    ts=rec.created,
                    **fields,
                )
            )
        except Exception:  # a log line never fails the task
            self.handleError(rec)


def capture_stdlib_logging() -> TaskLogHandler:
    """Attach the one ``TaskLogHandler`` of the process to the root logger (shared by every
    runtime of the process, counted); ``release_stdlib_logging`` detaches it after the last."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, TaskLogHandler)), None)
    if handler is None:
        handler = TaskLogHandler()
        root.addHandler(handler)
    handler.users += 1
    return handler


def release_stdlib_logging(handler: TaskLogHandler) -> None:
    handler.users -= 1
    if handler.users <= 0:
        logging.getLogger().removeHandler(handler)
