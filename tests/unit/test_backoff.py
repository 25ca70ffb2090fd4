"""The one backoff formula."""

from __future__ import annotations

import random

import pytest

from taskflow.backoff import Backoff, ceiling


def test_the_ceiling_doubles_from_the_base_up_to_the_cap() -> None:
    assert [ceiling(n, base=0.1, cap=1.0) for n in range(6)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert ceiling(10**6, base=1.0, cap=60.0, factor=10.0) == 60.0  # no OverflowError
    assert ceiling(-3, base=0.5, cap=9.0) == 0.5


def test_jitter_takes_off_at_most_its_share() -> None:
    rng = random.Random(7)
    half = Backoff(base=1.0, cap=8.0, jitter=0.5)
    delays = [half.delay(3, rng) for _ in range(1000)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 3.5  # really spread
    assert Backoff(base=1.0, cap=8.0).delay(3) == 8.0  # no jitter: the ceiling


@pytest.mark.parametrize("bad", [{"base": -1.0}, {"cap": -1.0}, {"factor": 0.5}, {"jitter": 1.5}])
def test_nonsense_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="jitter within"):
        Backoff(**bad)
