"""Shared fixtures. The core runs under both AnyIO backends; adapter tests opt out of trio."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# Adapters bound to asyncio (psycopg, aiormq, redis.asyncio, miniopy-async): their
# parametrizations are not generated for the trio backend.
ASYNCIO_ONLY = frozenset({"postgres", "rabbitmq", "redis", "s3"})

pytest_plugins = ["tests.pg", "tests.rabbit", "tests.s3", "tests.redis"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--faults",
        action="store_true",
        help="also run the fault scenarios that stop or restart the machine's RabbitMQ and "
        "PostgreSQL (marked `disruptive`; CI runs them, the default test command never does)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--faults"):
        why = "stops or restarts the machine's services: run with --faults (invoke test --faults)"
        for item in items:
            if item.get_closest_marker("disruptive"):
                item.add_marker(pytest.mark.skip(reason=why))
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        backend = params.get("anyio_backend")
        name = backend[0] if isinstance(backend, tuple) else backend
        adapters = {v for v in params.values() if isinstance(v, str)}
        (drop if name == "trio" and adapters & ASYNCIO_ONLY else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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
