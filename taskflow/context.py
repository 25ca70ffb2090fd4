"""What a running task receives besides its payload."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from taskflow import joblog
from taskflow.joblog import JobLog
from taskflow.log import get_logger

ProgressSink = Callable[[str, int, float, "str | None"], None]


@dataclass(kw_only=True)
class JobContext:
    """The job context: ``job_id``, ``attempt``, ``progress()``, a bound logger ``log``.

    ``progress`` may be called from the event loop (async tasks) or from the worker thread
    (sync tasks); it never blocks and never raises for a full buffer: progress is a hint and
    the latest value wins.
    """

    job_id: str
    attempt: int
    task: str
    queue: str = "default"
    payload_size: int = 0
    _sink: ProgressSink | None = None
    _cancelled: bool = False
    _log_empty: bool = False
    """The job has no log yet: its first attempt, never ended, released or replayed (each of
    those appends to its history). The log shipper then need not ask the store its size."""
    journal: JobLog = field(default=None)  # type: ignore[assignment]
    """This attempt's log records (``ctx.log``, stdlib logging in the task, lifecycle lines)."""
    _log: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.journal is None:
            self.journal = JobLog(self.job_id, self.attempt)

    @property
    def log(self) -> Any:
        """A structlog logger bound to the job (``job_id``, ``attempt``, ``task``) whose lines
        also go to the job's own log; made on first use (most tasks never log)."""
        if self._log is None:
            self._log = _JobLogger(
                get_logger("taskflow.task").bind(
                    job_id=self.job_id, attempt=self.attempt, task=self.task
                ),
                self.journal,
            )
        return self._log

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress in percent (0..100, clamped) with an optional message."""
        pct = max(0.0, min(100.0, float(percent)))
        if self._sink is not None:
            self._sink(self.job_id, self.attempt, pct, message)

    def cancel(self) -> None:
        """Turn ``cancelled`` true. The runtime calls it when the attempt is cancelled, times
        out or loses its lease; a sync task that checks ``cancelled`` then stops."""
        self._cancelled = True  # a plain attribute: a thread reading it sees it (the GIL)

    @property
    def cancelled(self) -> bool:
        """True once the attempt was cancelled or timed out; sync tasks should poll it."""
        return self._cancelled

    def log_lines(self) -> list[str]:
        """The records logged since the log shipper last took them, as JSON lines (the rest
        of the attempt's log, for its outcome)."""
        return [line.decode() for line in joblog.encode(self.journal.take()).splitlines()]


class _JobLogger:
    """A structlog logger that also keeps each line for the job's own log."""

    def __init__(self, inner: Any, journal: JobLog, bound: dict[str, Any] | None = None) -> None:
        self._inner = inner
        self._journal = journal
        self._bound = bound or {}

    def _emit(self, level: str, event: str, **kw: Any) -> None:
        fields = {**self._bound, **kw}
        when = time.time()
        self._journal.add(
            joblog.record(level, self._journal.attempt, event, source="task", ts=when, **fields)
        )
        getattr(self._inner, level)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, **kw)

    def bind(self, **kw: Any) -> _JobLogger:
        return _JobLogger(self._inner.bind(**kw), self._journal, {**self._bound, **kw})
