"""Admission control: past ``TASKFLOW_MAX_BACKLOG`` pending jobs (cluster-wide), submissions
get 429 ``backlog_full`` with a ``Retry-After`` from the current drain rate; reads, cancels
and replays go on.

The backlog is the store's count of ``pending`` jobs (counted up to the limit, so its cost
stays bounded), plus the jobs this process accepted since that count was read. It is
re-counted every second, and past half the limit before each decision that follows an
acceptance or comes 10 ms after the last count: far from the limit a stale count changes
nothing, near it each decision rests on a fresh one (what other API processes accepted in the
last 10 ms is the only thing it may miss).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from taskflow.jobs import JobStatus
from taskflow.ports import JobQueries
from web.responses import ApiError

NEAR = 0.5
"""From this fraction of the limit on, each decision rests on a count at most
``near_refresh`` old (or fresher, after this process accepted jobs)."""
NO_DRAIN_RETRY = 30
"""Retry-After while nothing drains (no worker finished a job in the last minute)."""
MAX_RETRY = 600


@dataclass(kw_only=True)
class Admission:
    max_backlog: int
    queries: JobQueries
    drain_rate: Callable[[], float]
    """Jobs finished per second, cluster-wide (the metrics' last minute)."""
    refresh: float = 1.0
    near_refresh: float = 0.01
    clock: Callable[[], float] = time.time
    _pending: int = field(default=0, init=False)
    _read_at: float = field(default=0.0, init=False)
    _fetched: float = field(default=-math.inf, init=False)
    _accepted: deque[tuple[float, int]] = field(default_factory=deque, init=False)
    _lock: anyio.Lock = field(default_factory=anyio.Lock, init=False)

    async def backlog(self) -> int:
        """The pending jobs: re-counted every ``refresh`` seconds; past half the limit,
        whenever this process accepted jobs since the last count or ``near_refresh`` passed,
        so a refusal rests on a fresh count."""
        age = time.monotonic() - self._fetched
        guessed = bool(self._accepted) and self._accepted[-1][0] >= self._read_at
        if age >= self.refresh or (
            self._estimate() >= NEAR * self.max_backlog and (guessed or age >= self.near_refresh)
        ):
            await self._recount()
        return self._estimate()

    def _estimate(self) -> int:
        return self._pending + sum(n for at, n in self._accepted if at >= self._read_at)

    async def _recount(self) -> None:
        async with self._lock:
            read_at = self.clock()
            self._pending = await self.queries.count_status(
                JobStatus.PENDING, limit=self.max_backlog + 1
            )
            self._read_at = read_at
            self._fetched = time.monotonic()
            while self._accepted and self._accepted[0][0] < read_at - 60.0:
                self._accepted.popleft()

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
