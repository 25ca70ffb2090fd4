"""Capped exponential backoff, the one formula behind every wait-and-try-again in TaskFlow:
task retries, supervisor restarts, outage retries, broker reconnects, database retries."""

from __future__ import annotations

import random
from dataclasses import dataclass


def ceiling(step: int, *, base: float, cap: float, factor: float = 2.0) -> float:
    """``min(cap, base * factor**step)`` for the ``step``-th wait (0-based), never overflowing."""
    try:
        return min(cap, base * factor ** max(0, step))
    except OverflowError:  # absurd step counts or factors: the cap won long before
        return cap


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """The ``step``-th wait is ``ceiling(step)``, less a random share of up to ``jitter`` of it
    (0: none; 0.5: many clients that lost the same server do not return in lockstep; 1: full
    jitter, anywhere between 0 and the ceiling)."""

    base: float = 0.1
    cap: float = 5.0
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("base and cap must be >= 0, factor >= 1, jitter within 0..1")

    def delay(self, step: int, rng: random.Random | None = None) -> float:
        top = ceiling(step, base=self.base, cap=self.cap, factor=self.factor)
        if not self.jitter:
            return top
        return top * (1.0 - self.jitter * (rng or random).random())
