"""RetryPolicy: exponential backoff with full jitter, bounded attempts, non-retryable errors."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from taskflow.errors import Retry
from taskflow.retry import GiveUp, RetryAfter, RetryPolicy

VALUE_ERROR_TYPES = ("ValueError", "builtins.ValueError")


def rng() -> random.Random:
    return random.Random(1234)


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (12, 2048.0), (13, 3600.0), (14, 3600.0)],
)
def test_backoff_ceiling_doubles_from_one_second_up_to_an_hour(
    attempt: int, ceiling: float
) -> None:
    assert RetryPolicy().backoff_ceiling(attempt) == ceiling


@pytest.mark.parametrize("attempt", [64, 65, 66, 1_000, 10_000])
def test_backoff_ceiling_huge_attempt_is_capped_without_overflow(attempt: int) -> None:
    assert RetryPolicy().backoff_ceiling(attempt) == 3600.0


def test_backoff_ceiling_steep_factor_does_not_overflow() -> None:
    # The constructor accepts any factor >= 1, so no attempt count may overflow the float.
    policy = RetryPolicy(factor=1e5, cap=60.0)
    assert [policy.backoff_ceiling(a) for a in (1, 2, 3, 64, 66)] == [1.0, 60.0, 60.0, 60.0, 60.0]


@pytest.mark.parametrize("attempt", [1, 4, 13])
def test_full_jitter_spreads_delays_over_zero_to_ceiling(attempt: int) -> None:
    policy = RetryPolicy()
    ceiling = policy.backoff_ceiling(attempt)
    source = rng()

    delays = [policy.delay(attempt, source) for _ in range(2_000)]

    assert all(0.0 <= d <= ceiling for d in delays)
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling
    assert statistics.mean(delays) == pytest.approx(ceiling / 2, rel=0.10)
    assert len(set(delays)) > 1_900  # jitter, not a handful of fixed values


@pytest.mark.parametrize("attempt", [1, 2, 3, 13, 10_000])
def test_without_jitter_delay_is_the_ceiling(attempt: int) -> None:
    policy = RetryPolicy(jitter=False)
    decision = policy.decide(attempt=attempt, max_attempts=attempt + 1, rng=rng())
    assert decision == RetryAfter(delay=policy.backoff_ceiling(attempt))


def test_decide_with_jitter_stays_under_the_ceiling() -> None:
    source = rng()
    decisions = [RetryPolicy(max_attempts=5).decide(attempt=3, rng=source) for _ in range(200)]
    assert all(isinstance(d, RetryAfter) and 0.0 <= d.delay <= 4.0 for d in decisions)
    assert len({d.delay for d in decisions if isinstance(d, RetryAfter)}) > 1


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (1, RetryAfter(delay=1.0)),
        (2, RetryAfter(delay=2.0)),
        (3, GiveUp(code="max_attempts_exceeded")),
        (4, GiveUp(code="max_attempts_exceeded")),
    ],
)
def test_max_attempts_reached_gives_up(attempt: int, expected: object) -> None:
    assert RetryPolicy(max_attempts=3, jitter=False).decide(attempt=attempt, rng=rng()) == expected


@pytest.mark.parametrize(
    ("per_call", "attempt", "expected"),
    [
        (1, 1, GiveUp(code="max_attempts_exceeded")),
        (5, 3, RetryAfter(delay=4.0)),
        (5, 4, RetryAfter(delay=8.0)),
        (5, 5, GiveUp(code="max_attempts_exceeded")),
    ],
)
def test_per_call_max_attempts_overrides_policy(
    per_call: int, attempt: int, expected: object
) -> None:
    policy = RetryPolicy(max_attempts=3, jitter=False)
    assert policy.decide(attempt=attempt, max_attempts=per_call, rng=rng()) == expected


@pytest.mark.parametrize("rule", ["ValueError", "builtins.ValueError"], ids=["short", "qualified"])
@pytest.mark.parametrize("attempt", [1, 2])
def test_non_retryable_gives_up_at_once(rule: str, attempt: int) -> None:
    policy = RetryPolicy(max_attempts=10, non_retryable=frozenset({rule}))
    decision = policy.decide(attempt=attempt, error_types=VALUE_ERROR_TYPES, rng=rng())
    assert decision == GiveUp(code="non_retryable")


def test_non_retryable_matches_a_base_class_in_the_mro() -> None:
    policy = RetryPolicy(max_attempts=10, non_retryable=frozenset({"LookupError"}))
    error_types = ("KeyError", "builtins.KeyError", "LookupError", "builtins.LookupError")
    assert policy.decide(attempt=1, error_types=error_types, rng=rng()) == GiveUp(
        code="non_retryable"
    )


def test_other_errors_are_retried() -> None:
    policy = RetryPolicy(non_retryable=frozenset({"KeyError"}), jitter=False)
    decision = policy.decide(attempt=1, error_types=VALUE_ERROR_TYPES, rng=rng())
    assert decision == RetryAfter(delay=1.0)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(0.0, 0.0), (2.5, 2.5), (3600.0, 3600.0), (90_000.0, 3600.0)],
)
def test_requested_delay_is_honoured_and_capped(requested: float, expected: float) -> None:
    # With jitter on, only the requested delay can explain an exact value.
    decision = RetryPolicy().decide(attempt=1, requested_delay=requested, rng=rng())
    assert decision == RetryAfter(delay=expected)


def test_requested_delay_does_not_extend_max_attempts() -> None:
    decision = RetryPolicy(max_attempts=2).decide(attempt=2, requested_delay=5.0, rng=rng())
    assert decision == GiveUp(code="max_attempts_exceeded")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"base": -1.0},
        {"cap": -1.0},
        {"factor": 0.5},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_invalid_policy_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=">="):
        RetryPolicy(**kwargs)


def test_retry_rejects_a_negative_delay() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Retry(delay=-1)


@pytest.mark.parametrize("delay", [None, 0.0, 12.5])
def test_retry_carries_its_delay(delay: float | None) -> None:
    assert Retry(delay=delay).delay == delay
