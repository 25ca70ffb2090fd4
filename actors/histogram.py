"""Latency summaries and event rates for the metrics actor. Pure: no I/O, time is passed in."""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
"""Upper bounds (seconds) of the histogram buckets: a no-op's milliseconds to an hour's job."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencySummary:
    """Seconds. ``count``, ``mean`` and ``max`` cover every sample ever recorded; the percentiles
    cover the most recent ones only. All zero when nothing was recorded."""

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    total: float = 0.0
    """The sum of every sample (Prometheus' ``_sum``)."""
    buckets: tuple[int, ...] = (0,) * len(BUCKETS)
    """Cumulative counts of samples at most each of ``BUCKETS`` (every sample ever)."""


class LatencyHistogram:
    """Durations in seconds: percentiles (nearest rank) over the last ``max_samples`` samples."""

    def __init__(self, max_samples: int = 10_000) -> None:
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        self._recent: deque[float] = deque(maxlen=max_samples)
        self._count = 0
        self._total = 0.0
        self._max = 0.0
        self._bins = [0] * (len(BUCKETS) + 1)  # the last one: above every bound
        self._summary: LatencySummary | None = LatencySummary()

    def record(self, seconds: float) -> None:
        self._recent.append(seconds)
        self._max = seconds if self._count == 0 else max(self._max, seconds)
        self._count += 1
        self._total += seconds
        self._bins[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._summary = None

    def snapshot(self) -> LatencySummary:
        """Sorts the recent samples once per change; repeated calls reuse the result."""
        if self._summary is None:
            ordered = sorted(self._recent)
            self._summary = LatencySummary(
                count=self._count,
                mean=self._total / self._count,
                p50=_nearest_rank(ordered, 50),
                p95=_nearest_rank(ordered, 95),
                p99=_nearest_rank(ordered, 99),
                max=self._max,
                total=self._total,
                buckets=_cumulative(self._bins[:-1]),
            )
        return self._summary


def _cumulative(bins: list[int]) -> tuple[int, ...]:
    running, out = 0, []
    for n in bins:
        running += n
        out.append(running)
    return tuple(out)


def _nearest_rank(ordered: list[float], percent: float) -> float:
    rank = math.ceil(percent / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


class RateWindow:
    """Counts per whole second of a monotonic clock, over the last 60 full seconds.

    The second in progress is counted but not reported until it is over, so rates do not dip
    at the start of every second.
    """

    _SPAN = 60

    def __init__(self) -> None:
        # One slot more than the span: the second in progress plus 60 full ones.
        self._seconds: list[int | None] = [None] * (self._SPAN + 1)
        self._counts = [0] * (self._SPAN + 1)

    def add(self, now: float, n: int = 1) -> None:
        second = math.floor(now)
        slot = second % len(self._seconds)
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = 0
        self._counts[slot] += n

    def rate_1s(self, now: float) -> float:
        """Events in the last full second, per second."""
        return float(self._count_full_seconds(now, 1))

    def rate_60s(self, now: float) -> float:
        """Events in the last 60 full seconds, per second."""
        return self._count_full_seconds(now, self._SPAN) / self._SPAN

    def _count_full_seconds(self, now: float, span: int) -> int:
        current = math.floor(now)
        return sum(
            count
            for second, count in zip(self._seconds, self._counts, strict=True)
            if second is not None and current - span <= second < current
        )
