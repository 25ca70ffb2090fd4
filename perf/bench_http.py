"""HTTP submit throughput and end-to-end latency of `taskflow up`, measured against the
ceiling of the same PostgreSQL in the same run.

    python perf/bench_http.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

It creates a scratch database, starts `taskflow up` on it as a subprocess, then measures:
  1. POST /api/v1/jobs with 100-item batches (jobs/s accepted), C client threads;
  2. POST /api/v1/jobs with single items (jobs/s accepted);
  3. end-to-end latency (created_at -> finished_at, from the jobs themselves) of echo jobs
     submitted one at a time at a modest rate, p50/p95/p99;
  4. the baseline: the same number of rows inserted by one `executemany` straight into the
     same jobs table (what the database alone allows), so TaskFlow's rate is a ratio.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskflow.postgres.migrate import migrate  # noqa: E402


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class Client(threading.local):
    """One keep-alive connection per thread."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body)
        self.conn.request(method, path, payload, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data or b"null")


def submit_all(
    port: int, batches: list[list[dict[str, Any]]], threads: int
) -> tuple[float, list[str]]:
    local = threading.local()
    ids: list[str] = []
    lock = threading.Lock()

    def one(batch: list[dict[str, Any]]) -> None:
        if not hasattr(local, "client"):
            local.client = Client(port)
        status, body = local.client.call(
            "POST", "/api/v1/jobs", {"task_type": "echo", "data": batch}
        )
        if status != 202:
            raise RuntimeError(f"{status}: {body}")
        with lock:
            ids.extend(body["taskIds"])

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, batches))
    return time.perf_counter() - started, ids


def wait_idle(port: int, timeout: float = 300) -> None:
    client = Client(port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = client.call("GET", "/api/v1/metrics")
        active = sum(
            body["jobs_by_status"].get(s, 0) for s in ("pending", "scheduled", "in_progress")
        )
        if active == 0:
            return
        time.sleep(0.5)
    raise TimeoutError("jobs still active")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def baseline_insert(url: str, rows: int) -> float:
    """Rows/s of one batched INSERT straight into the jobs table (no TaskFlow)."""
    now = datetime.now().astimezone()
    data = [
        (str(uuid.uuid4()), "echo", "default", json.dumps({"i": i}), "pending", 0, 3, now, now)
        for i in range(rows)
    ]
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO taskflow_jobs (id, task, queue, payload, status, priority, max_attempts,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                data,
            )
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute(
            "DELETE FROM taskflow_jobs WHERE status = 'pending' AND task = 'echo' AND attempts = 0"
        )
        conn.commit()
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "TASKFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--batches", type=int, default=100, help="100-item batches to submit")
    parser.add_argument("--singles", type=int, default=2000, help="single-item requests")
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    name = f"tf_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = with_db(args.database_url, name)
    migrate(url)
    port = 18000 + os.getpid() % 1000
    home = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    env = {
        **os.environ,
        "TASKFLOW_DATABASE_URL": url,
        "TASKFLOW_HOME": str(home),
        "TASKFLOW_PORT": str(port),
        "TASKFLOW_CONCURRENCY": str(args.concurrency),
        "TASKFLOW_LOG_LEVEL": "warning",
    }
    log_file = (home / "log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskflow", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if Client(port).call("GET", "/api/v1/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"taskflow up did not start: {(home / 'log').read_text()[-2000:]}")
            time.sleep(0.2)

        rows = args.batches * 100
        baseline = baseline_insert(url, rows)

        elapsed, ids = submit_all(
            port, [[{"payload": {"i": i}}] * 100 for i in range(args.batches)], args.threads
        )
        batch_rate = len(ids) / elapsed
        wait_idle(port)

        elapsed, single_ids = submit_all(
            port, [[{"payload": {"i": i}}] for i in range(args.singles)], args.threads
        )
        single_rate = len(single_ids) / elapsed
        wait_idle(port)

        client = Client(port)
        latency_ids = []
        for i in range(args.latency_jobs):
            _, body = client.call(
                "POST", "/api/v1/jobs", {"task_type": "echo", "data": [{"payload": {"i": i}}]}
            )
            latency_ids += body["taskIds"]
            time.sleep(0.01)
        wait_idle(port)
        e2e = []
        for job_id in latency_ids:
            _, job = client.call("GET", f"/api/v1/jobs/{job_id}")
            created = datetime.fromisoformat(job["createdAt"])
            finished = datetime.fromisoformat(job["finishedAt"])
            e2e.append((finished - created).total_seconds() * 1000)
        _, metrics = client.call("GET", "/api/v1/metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log_file.close()
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    print(
        f"taskflow up, {args.concurrency} executors, {args.threads} client threads, PostgreSQL at {urlsplit(args.database_url).hostname}"
    )
    print(f"{'measurement':<52} {'value':>12} {'vs raw INSERT':>14}")
    print(
        f"{'raw batched INSERT into the jobs table (rows/s)':<52} {baseline:>12,.0f} {'1.00':>14}"
    )
    print(
        f"{'POST /jobs, 100-item batches (jobs/s accepted)':<52} {batch_rate:>12,.0f} {batch_rate / baseline:>14.2f}"
    )
    print(
        f"{'POST /jobs, single items (jobs/s accepted)':<52} {single_rate:>12,.0f} {single_rate / baseline:>14.2f}"
    )
    print(f"{'end-to-end latency p50 (ms), created->finished':<52} {statistics.median(e2e):>12.1f}")
    print(
        f"{'end-to-end latency p95 / p99 (ms)':<52} {percentile(e2e, 95):>6.1f} / {percentile(e2e, 99):.1f}"
    )
    print(f"metrics actor end_to_end: {json.dumps(metrics['end_to_end'])}")


if __name__ == "__main__":
    main()
