"""The retry policy: exponential backoff with full jitter, bounded attempts, non-retryable errors.

``decide`` is pure given its random source: tests seed it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from taskflow.backoff import ceiling


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryAfter:
    """Run the job again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True, kw_only=True)
class GiveUp:
    """Dead-letter the job. ``code`` is ``max_attempts_exceeded`` or ``non_retryable``."""

    code: str


Decision = RetryAfter | GiveUp


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Defaults: base 1 s, doubling, capped at 1 h, full jitter, 3 attempts.

    ``non_retryable`` holds exception type names (``ValueError``, ``myapp.errors.BadInput``):
    names, not classes, so a policy can be read from configuration and compared across
    processes. A subclass of a listed class matches when the failure carries its MRO.
    """

    max_attempts: int = 3
    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: bool = True
    non_retryable: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ValueError("base and cap must be >= 0 and factor >= 1")

    def backoff_ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        return ceiling(attempt - 1, base=self.base, cap=self.cap, factor=self.factor)

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = self.backoff_ceiling(attempt)
        return rng.uniform(0.0, ceiling) if self.jitter else ceiling

    def decide(
        self,
        *,
        attempt: int,
        error_types: tuple[str, ...] = (),
        requested_delay: float | None = None,
        max_attempts: int | None = None,
        rng: random.Random,
    ) -> Decision:
        """What to do after attempt ``attempt`` failed.

        ``error_types`` is the failure's MRO as qualified names (most specific first); any of
        them in ``non_retryable`` gives up at once. ``requested_delay`` comes from ``Retry``.
        """
        if any(t in self.non_retryable for t in error_types):
            return GiveUp(code="non_retryable")
        limit = self.max_attempts if max_attempts is None else max_attempts
        if attempt >= limit:
            return GiveUp(code="max_attempts_exceeded")
        if requested_delay is not None:
            return RetryAfter(delay=min(requested_delay, self.cap))
        return RetryAfter(delay=self.delay(attempt, rng))
