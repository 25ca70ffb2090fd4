"""What a running task receives besides its payload."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    _cancel: threading.Event = field(default_factory=threading.Event)
    _lines: list[str] = field(default_factory=list)
    log: Any = None

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = _JobLogger(
                get_logger("taskflow.task").bind(
                    job_id=self.job_id, attempt=self.attempt, task=self.task
                ),
                self._lines,
            )

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress in percent (0..100, clamped) with an optional message."""
        pct = max(0.0, min(100.0, float(percent)))
        if self._sink is not None:
            self._sink(self.job_id, self.attempt, pct, message)

    def cancel(self) -> None:
        """Turn ``cancelled`` true. The runtime calls it when the attempt is cancelled, times
        out or loses its lease; a sync task that checks ``cancelled`` then stops."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        """True once the attempt was cancelled or timed out; sync tasks should poll it."""
        return self._cancel.is_set()

    def log_lines(self) -> list[str]:
        """The lines this attempt logged through ``ctx.log`` (captured for the job's log)."""
        return list(self._lines)


class _JobLogger:
    """A structlog logger that also keeps each line for the job's own log."""

    def __init__(self, inner: Any, lines: list[str]) -> None:
        self._inner = inner
        self._lines = lines
        self._lock = threading.Lock()

    def _emit(self, level: str, event: str, **kw: Any) -> None:
        extras = " ".join(f"{k}={v!r}" for k, v in kw.items())
        with self._lock:
            if len(self._lines) < 10_000:
                self._lines.append(f"{level.upper()} {event}{' ' + extras if extras else ''}")
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
        return _JobLogger(self._inner.bind(**kw), self._lines)
