"""The store fixture of the contract tests: one fresh, empty store per test, per adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from taskflow.memory import MemoryJobStore
from taskflow.ports.store import JobQueries, JobStore
from taskflow.postgres import open_store


class Store(JobStore, JobQueries, Protocol):
    """What one adapter provides: both the write and the read port."""


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """One fresh, empty store per test, for each adapter.

    Later adapters plug in here: add their name to ``params`` and a ``case`` that opens the
    adapter on an empty database and closes it after the ``yield`` (e.g. ``"postgres"``:
    ``PostgresJobStore`` on a database cloned from the migrated template, calling
    ``require_service`` from tests/conftest.py when PostgreSQL is not reachable).
    """
    match request.param:
        case "memory":
            yield MemoryJobStore()
        case "postgres":
            async with open_store(request.getfixturevalue("pg_url")) as pg:
                yield pg
        case other:
            raise AssertionError(f"no JobStore adapter named {other!r}")
