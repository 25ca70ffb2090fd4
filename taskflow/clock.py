"""Wall-clock time that follows AnyIO's clock, so trio's MockClock drives delays in tests."""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class AnyioClock:
    """Epoch seconds anchored at first use, then advanced by ``anyio.current_time()``.

    Must be read inside an event loop. Under trio's MockClock it jumps with the mock clock.
    """

    def __init__(self) -> None:
        self._anchor: tuple[float, float] | None = None

    def now(self) -> float:
        mono = anyio.current_time()
        if self._anchor is None:
            self._anchor = (time.time(), mono)
        wall0, mono0 = self._anchor
        return wall0 + (mono - mono0)


class WallClock:
    """Plain ``time.time()``: for processes that share a database with others."""

    def now(self) -> float:
        return time.time()
