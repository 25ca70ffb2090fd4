"""The Python producer (`taskflow.connect`) on this machine's PostgreSQL and RabbitMQ:
enqueue rates (W1) and submit -> completion latency with one worker (W3).

    python perf/bench_producer.py --jobs 10000

W1, no worker running: sequential `submit` (jobs/10 of them), 32 concurrent submitters, and
`submit_many` in batches of 1,000; each returns after the durable commit and the confirmed
publish. W3: one `taskflow worker` (demo tasks), 200 sequential `submit` + `wait` of `echo`,
p50/p95/p99 in ms. A scratch database and vhost, dropped after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import taskflow  # noqa: E402
from taskflow.main import load_registry  # noqa: E402

PG = os.environ.get("TASKFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("TASKFLOW_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def enqueue(db: str, amqp: str, jobs: int) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    registry = load_registry([], demo=True)
    async with taskflow.connect(database_url=db, amqp_url=amqp, registry=registry) as tf:
        await tf.submit("echo", {})  # warm: pool and channels open
        n = jobs // 10
        start = time.perf_counter()
        for _ in range(n):
            await tf.submit("echo", {})
        rows.append(("submit, sequential", n / (time.perf_counter() - start)))

        async def submitter(count: int) -> None:
            for _ in range(count):
                await tf.submit("echo", {})

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(32):
                tg.start_soon(submitter, jobs // 32)
        rows.append(
            ("submit, 32 concurrent submitters", (jobs // 32 * 32) / (time.perf_counter() - start))
        )
        batch = [taskflow.NewJob(task="echo") for _ in range(1000)]
        start = time.perf_counter()
        for _ in range(jobs // 1000):
            await tf.submit_many(batch)
        rows.append(
            ("submit_many, batches of 1,000", (jobs // 1000 * 1000) / (time.perf_counter() - start))
        )
    return rows


async def latency(db: str, amqp: str, n: int) -> list[float]:
    registry = load_registry([], demo=True)
    samples: list[float] = []
    async with taskflow.connect(database_url=db, amqp_url=amqp, registry=registry) as tf:
        await tf.wait(await tf.submit("echo", {}), timeout=30)  # warm
        for _ in range(n):
            start = time.perf_counter()
            await tf.wait(await tf.submit("echo", {}), timeout=30)
            samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    name = f"tf_bench_prod_{uuid.uuid4().hex[:8]}"
    vhost = f"taskflow-bench-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    db, amqp = PG.rsplit("/", 1)[0] + f"/{name}", f"{AMQP.rstrip('/')}/{vhost}"
    try:
        rows = anyio.run(enqueue, db, amqp, args.jobs, backend="asyncio")
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("TRUNCATE taskflow_jobs")
        with tempfile.TemporaryDirectory() as home:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("TASKFLOW_")},
                "PYTHONPATH": str(ROOT),
                "TASKFLOW_DATABASE_URL": db,
                "TASKFLOW_AMQP_URL": amqp,
                "TASKFLOW_HOME": home,
                "TASKFLOW_DEMO": "1",
            }
            worker = subprocess.Popen(
                [sys.executable, "-m", "taskflow", "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                samples = anyio.run(latency, db, amqp, 200, backend="asyncio")
            finally:
                worker.terminate()
                worker.wait(timeout=60)
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        rabbitmqctl("delete_vhost", vhost)
    print(f"Python producer, {args.jobs:,} no-op jobs, this machine's PostgreSQL and RabbitMQ")
    print(f"{'W1 enqueue':<40} {'jobs/s':>10}")
    for what, rate in rows:
        print(f"{what:<40} {rate:>10,.0f}")
    print(
        f"W3 submit -> completion, 1 worker, 200 sequential: p50 {pct(samples, 0.5):.1f} ms, "
        f"p95 {pct(samples, 0.95):.1f} ms, p99 {pct(samples, 0.99):.1f} ms, "
        f"mean {statistics.mean(samples) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
