"""Tasks for the multi-process tests, loaded by workers through TASKFLOW_TASKS.

`record` writes one row per execution (job id, attempt, worker pid) into `executions` in the
job database, so a test can count how often each job really ran, and where.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import anyio
import psycopg

from taskflow import JobContext, TaskRegistry

registry = TaskRegistry()
_local = threading.local()

CREATE = """
CREATE TABLE IF NOT EXISTS executions (
    seq      bigserial PRIMARY KEY,
    job_id   uuid NOT NULL,
    attempt  integer NOT NULL,
    worker   integer NOT NULL,
    priority integer,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def _connection() -> psycopg.Connection[Any]:
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["TASKFLOW_DATABASE_URL"], autocommit=True)
        _local.conn = conn
    return conn


@registry.task(name="record", max_attempts=5, timeout=60.0)
def record(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Sleep ``ms`` milliseconds, then record this execution."""
    time.sleep(float(payload.get("ms", 0)) / 1000.0)
    _insert(ctx.job_id, ctx.attempt, payload.get("priority"))
    return {"worker": os.getpid()}


def _insert(job_id: str, attempt: int, priority: Any = None) -> None:
    _connection().execute(
        "INSERT INTO executions (job_id, attempt, worker, priority) VALUES (%s, %s, %s, %s)",
        (job_id, attempt, os.getpid(), priority),
    )


@registry.task(name="record_async", max_attempts=5, timeout=60.0)
async def record_async(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """`record` as an async task: the sleep can be cancelled, the recording cannot."""
    await anyio.sleep(float(payload.get("ms", 0)) / 1000.0)
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(_insert, ctx.job_id, ctx.attempt)
    return {"worker": os.getpid()}


@registry.task(name="noop", timeout=30.0)
async def noop(payload: dict[str, Any], ctx: JobContext) -> None:
    """Nothing at all: for drain-rate measurements."""


@registry.task(name="poison_result", max_attempts=3, timeout=30.0)
async def poison_result(payload: dict[str, Any], ctx: JobContext) -> Any:
    """Return a value PostgreSQL refuses (a NUL, or a lone surrogate)."""
    return {"text": "nul \x00 inside"} if payload.get("kind") != "surrogate" else ["\ud800"]


@registry.task(name="poison_error", max_attempts=2, timeout=30.0)
async def poison_error(payload: dict[str, Any], ctx: JobContext) -> None:
    """Fail with an error message PostgreSQL would refuse as it is."""
    raise RuntimeError("broken \x00 message \udfff")


@registry.task(name="chatty", max_attempts=1, timeout=120.0)
async def chatty(payload: dict[str, Any], ctx: JobContext) -> int:
    """Log a line every ``every`` seconds, ``ticks`` times (for log tails and S3 outages)."""
    for i in range(int(payload.get("ticks", 3))):
        ctx.log.info("tick", i=i)
        await anyio.sleep(float(payload.get("every", 0.1)))
    return int(payload.get("ticks", 3))
