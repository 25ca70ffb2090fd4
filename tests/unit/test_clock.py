"""AnyioClock follows AnyIO's clock, so trio's MockClock drives it without real waiting."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from taskflow.clock import AnyioClock, WallClock
from tests.conftest import mock_clock_backend

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_now_advances_exactly_with_mock_sleep() -> None:
    clock = AnyioClock()
    real_start = time.monotonic()
    before = clock.now()

    await anyio.sleep(3600)
    after_one_hour = clock.now()
    await anyio.sleep(0.25)
    after_more = clock.now()

    assert after_one_hour - before == 3600.0
    assert after_more - after_one_hour == 0.25
    assert time.monotonic() - real_start < 5.0  # virtual time: no real hour passed


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_now_is_anchored_at_the_wall_clock() -> None:
    wall = time.time()
    now = AnyioClock().now()
    assert abs(now - wall) < 5.0


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_now_stands_still_without_sleeping() -> None:
    clock = AnyioClock()
    first = clock.now()
    await anyio.lowlevel.checkpoint()
    assert clock.now() == first  # the mock clock only moves when the loop waits


async def test_now_tracks_real_time_on_every_backend() -> None:
    clock, wall = AnyioClock(), WallClock()
    assert abs(clock.now() - wall.now()) < 5.0
    before = clock.now()
    await anyio.sleep(0.01)
    assert clock.now() - before >= 0.009
