"""Admission control: past ``TASKFLOW_MAX_BACKLOG`` pending jobs (cluster-wide), submissions
get 429 ``backlog_full`` with a ``Retry-After`` from the current drain rate; reads, cancels
and replays go on.

The backlog is the store's count of ``pending`` jobs (read through the shared cache at most
every ``refresh`` seconds), plus the jobs this process accepted since that count was read,
so one process's own burst is counted at once and other processes' within about a second.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from taskflow.counting import CachedCounts
from taskflow.jobs import JobStatus
from web.responses import ApiError

NO_DRAIN_RETRY = 30
"""Retry-After while nothing drains (no worker finished a job in the last minute)."""
MAX_RETRY = 600


@dataclass(kw_only=True)
class Admission:
    max_backlog: int
    counts: CachedCounts
    drain_rate: Callable[[], float]
    """Jobs finished per second, cluster-wide (the metrics' last minute)."""
    refresh: float = 0.5
    clock: Callable[[], float] = time.time
    _pending: int = field(default=0, init=False)
    _read_at: float = field(default=0.0, init=False)
    _fetched: float = field(default=-math.inf, init=False)
    _accepted: deque[tuple[float, int]] = field(default_factory=deque, init=False)
    _lock: anyio.Lock = field(default_factory=anyio.Lock, init=False)

    async def backlog(self) -> int:
        if time.monotonic() - self._fetched >= self.refresh:
            async with self._lock:
                if time.monotonic() - self._fetched >= self.refresh:
                    counts = await self.counts.counts()
                    self._pending = counts.get(JobStatus.PENDING, 0)
                    self._read_at = self.counts.read_at
                    self._fetched = time.monotonic()
                    while self._accepted and self._accepted[0][0] < self._read_at - 60.0:
                        self._accepted.popleft()
        return self._pending + sum(n for at, n in self._accepted if at >= self._read_at)

    async def admit(self) -> None:
        """Raise 429 ``backlog_full`` when the backlog has reached the limit."""
        backlog = await self.backlog()
        if backlog < self.max_backlog:
            return
        rate = self.drain_rate()
        over = backlog - self.max_backlog + 1
        retry = NO_DRAIN_RETRY if rate <= 0 else min(MAX_RETRY, max(1, math.ceil(over / rate)))
        raise ApiError(
            429,
            "backlog_full",
            f"{backlog} jobs are waiting (the limit is {self.max_backlog}); retry in {retry} s.",
            details={
                "backlog": backlog,
                "max_backlog": self.max_backlog,
                "drain_rate": round(rate, 3),
                "retry_after": retry,
            },
            headers={"Retry-After": str(retry)},
        )

    def accepted(self, jobs: int) -> None:
        """``jobs`` were stored by this process (counted until the next count includes them)."""
        self._accepted.append((self.clock(), jobs))
