"""PostgreSQL for tests: the machine's server when TASKFLOW_TEST_DATABASE_URL is set (CI sets
it), the embedded one otherwise. Each test gets its own database cloned from a migrated
template (procrastinate's pattern)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from taskflow.postgres import PostgresJobStore, embedded_server, migrate, open_store
from tests.conftest import require_service


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def admin(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("TASKFLOW_TEST_DATABASE_URL")
    if url:
        try:
            admin(url, "SELECT 1")
        except psycopg.Error as exc:
            require_service("PostgreSQL", f"{url}: {exc}")
        yield url
        return
    # Not under pytest's own temp folder: that one is private to the user (0700), and as root
    # the embedded server runs as another user, which must reach its data.
    home = Path(tempfile.mkdtemp(prefix="taskflow-test-pg-"))
    home.chmod(0o755)
    try:
        with embedded_server(home) as url:
            yield url
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_server_url: str) -> Iterator[str]:
    name = f"tf_tmpl_{os.getpid()}"
    admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    migrate(with_database(pg_server_url, name))
    yield name
    admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server_url: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated, empty database for this test."""
    name = f"tf_{uuid.uuid4().hex[:16]}"
    admin(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield with_database(pg_server_url, name)
    admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresJobStore]:
    async with open_store(pg_url) as store:
        yield store
