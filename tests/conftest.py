"""Shared fixtures. The core runs under both AnyIO backends; adapter tests opt out of trio."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def mock_clock_backend() -> object:
    """A ``pytest.param`` for ``anyio_backend``: trio with a MockClock that jumps when idle."""
    import trio.testing

    return pytest.param(
        ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
    )


def require_service(name: str, reason: str) -> None:
    """Skip locally when a service is missing; fail under CI, where every service must run."""
    if IN_CI:
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")
