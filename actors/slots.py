"""Executor slots: the capacity the dispatcher and the executor pool share.

The dispatcher takes a slot for every job before it claims it, and claims no more jobs than
there are free slots; the pool gives a slot back once the job's outcome is recorded
(``InFlight.release``). So the broker may deliver ahead (the prefetch is larger than the
pool, and the next batch is ready as soon as slots free up) while no job is ever claimed
(its lease ticking) without an executor free to run it at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskflow.streams import Notifier


@dataclass(kw_only=True)
class Slots:
    capacity: int
    _used: int = field(default=0, init=False)
    _freed: Notifier = field(default_factory=Notifier, init=False)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("capacity must be >= 1")

    async def take(self, want: int) -> int:
        """Wait for a free slot; take up to ``want`` of the free ones and say how many."""
        while self._used >= self.capacity:
            await self._freed.wait()
        granted = min(want, self.capacity - self._used)
        self._used += granted
        return granted

    def give(self, n: int = 1) -> None:
        """Give ``n`` slots back (a recorded outcome, or slots taken and not used)."""
        if n <= 0:
            return
        if n > self._used:
            raise RuntimeError(f"giving back {n} slots, {self._used} taken")
        self._used -= n
        self._freed.notify()

    def used(self) -> int:
        return self._used
