"""Shared helpers for the fault suite: real `taskflow api` / `taskflow worker` processes
(tests/e2e/service.py), per-process environments, and reading the truth from PostgreSQL
directly (the API may be the process a test just killed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

from tests.e2e.recording_tasks import CREATE
from tests.e2e.service import Service
from tests.rabbit import Vhost

TERMINAL = ("completed", "failed", "cancelled")

# Every transition of a job into `completed`, as the database saw it: "completed twice" is
# measured here, independent of what any TaskFlow process believes it wrote.
COMPLETIONS = """
CREATE TABLE IF NOT EXISTS completions (
    seq     bigserial PRIMARY KEY,
    job_id  uuid NOT NULL,
    attempt integer NOT NULL,
    result  jsonb,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION record_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO completions (job_id, attempt, result) VALUES (NEW.id, NEW.attempts, NEW.result);
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER record_completion AFTER UPDATE ON taskflow_jobs FOR EACH ROW
    WHEN (NEW.status = 'completed' AND OLD.status <> 'completed')
    EXECUTE FUNCTION record_completion();
"""


def base_env(pg_url: str, vhost: Vhost, **extra: str) -> dict[str, str]:
    """The environment every process of one test cluster shares (creates `executions`)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(CREATE)
        conn.execute(COMPLETIONS)
    return {
        "TASKFLOW_DATABASE_URL": pg_url,
        "TASKFLOW_AMQP_URL": vhost.url,
        "TASKFLOW_TASKS": "tests.e2e.recording_tasks",
        "TASKFLOW_CONCURRENCY": "8",
        "TASKFLOW_QUEUES": "default",
        "TASKFLOW_LEASE_SECONDS": "3",
        "TASKFLOW_REAPER_INTERVAL_SECONDS": "1",
        **extra,
    }


def service(tmp_path: Path, name: str, env: dict[str, str], command: str) -> Service:
    home = tmp_path / name
    home.mkdir()
    return Service(home=home, env=env, command=(command,))


def query(pg_url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return list(conn.execute(sql, params).fetchall())


def completions(pg_url: str) -> list[tuple[str, int, Any]]:
    """(job id, attempt, result) of every transition into `completed`, in order."""
    rows = query(pg_url, "SELECT job_id::text, attempt, result FROM completions ORDER BY seq")
    return [(str(r[0]), int(r[1]), r[2]) for r in rows]


def completed_twice(pg_url: str) -> list[str]:
    rows = query(pg_url, "SELECT job_id::text FROM completions GROUP BY job_id HAVING count(*) > 1")
    return [str(r[0]) for r in rows]


def status_counts(pg_url: str) -> dict[str, int]:
    rows = query(pg_url, "SELECT status, count(*) FROM taskflow_jobs GROUP BY status")
    return {str(status): int(n) for status, n in rows}


def wait_all_terminal(pg_url: str, total: int, timeout: float) -> dict[str, int]:
    """Poll the jobs table until ``total`` jobs are terminal; returns the status counts."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = status_counts(pg_url)
        if sum(counts.get(s, 0) for s in TERMINAL) >= total:
            return counts
        time.sleep(0.25)
    raise AssertionError(f"not all {total} jobs terminal after {timeout} s: {counts}")


def stop_all(services: list[Service]) -> None:
    for s in services:
        s.stop()
