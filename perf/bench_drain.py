"""Drain rate of queued no-op jobs by `taskflow worker` processes on RabbitMQ + PostgreSQL,
against the raw broker drain measured in the same run.

    python perf/bench_drain.py --jobs 10000 --workers 1,3

For each worker count: a scratch database and vhost, `taskflow api` accepts N no-op jobs over
HTTP while no worker runs (the backlog), then the workers start together and the clock runs
from the first worker's `taskflow_started` to the last job completed (polled in PostgreSQL).
Baseline: N persistent messages published and drained by one raw aiormq consumer (prefetch
64, one ack each) on the same broker: what the transport alone allows per process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import psycopg

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready")


def completed(db: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM taskflow_jobs WHERE status = 'completed'"
        ).fetchone()
        return int(row[0]) if row else 0


def run_taskflow(
    jobs: int, workers: int, concurrency: int, pg: str, amqp: str, profile: str | None = None
) -> float:
    name = f"tf_drain_{uuid.uuid4().hex[:8]}"
    vhost = f"tf-drain-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl(
        "set_permissions", "-p", vhost, urlsplit(amqp).username or "guest", ".*", ".*", ".*"
    )
    db = with_path(pg, f"/{name}")
    home = Path(tempfile.mkdtemp(prefix="tf-drain-"))
    port = 19000 + os.getpid() % 500
    env = {
        **os.environ,
        "TASKFLOW_DATABASE_URL": db,
        "TASKFLOW_AMQP_URL": with_path(amqp, f"/{vhost}"),
        "TASKFLOW_HOME": str(home),
        "TASKFLOW_PORT": str(port),
        "TASKFLOW_CONCURRENCY": str(concurrency),
        "TASKFLOW_TASKS": "tests.e2e.recording_tasks",
        "PYTHONPATH": str(ROOT),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = subprocess.Popen(
            [PY, "-m", "taskflow", "api"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(api)
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", api)
        for _ in range(jobs // 100):
            post(
                f"http://127.0.0.1:{port}/api/v1/jobs",
                {"task_type": "noop", "data": [{"payload": {}}] * 100},
            )
        logs = [home / f"worker{i}.log" for i in range(workers)]
        for log in logs:
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [PY, "-m", "taskflow", "worker"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        while not any(b"taskflow_started" in log.read_bytes() for log in logs):
            time.sleep(0.01)
        started = time.perf_counter()
        if profile:  # sample the first worker for 5 s of its drain (collapsed stacks)
            spy = [
                shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
                "record",
                "-r",
                "250",
                "-d",
                "5",
                "-f",
                "raw",
                "-o",
                profile,
                "--pid",
                str(procs[1].pid),
            ]
            subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while completed(db) < jobs:
            time.sleep(0.05)
        return jobs / (time.perf_counter() - started)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        rabbitmqctl("delete_vhost", vhost)


async def raw_broker_drain(jobs: int, amqp: str) -> float:
    import aiormq

    vhost = f"tf-raw-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl(
        "set_permissions", "-p", vhost, urlsplit(amqp).username or "guest", ".*", ".*", ".*"
    )
    try:
        connection = await aiormq.connect(with_path(amqp, f"/{vhost}"))
        channel = await connection.channel()
        await channel.queue_declare("raw", durable=True, arguments={"x-max-priority": 9})
        body = b'{"type":"JobMessage","body":{"job_id":"x","task":"noop","queue":"default","priority":0}}'
        props = aiormq.spec.Basic.Properties(delivery_mode=2)
        for i in range(0, jobs, 500):
            await anyio.lowlevel.checkpoint()
            confirmations = [
                channel.basic_publish(body, routing_key="raw", properties=props)
                for _ in range(min(500, jobs - i))
            ]
            for confirmation in confirmations:
                await confirmation
        done = anyio.Event()
        count = 0

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            nonlocal count
            await channel.basic_ack(message.delivery.delivery_tag)
            count += 1
            if count >= jobs:
                done.set()

        await channel.basic_qos(prefetch_count=64)
        started = time.perf_counter()
        await channel.basic_consume("raw", on_message, no_ack=False)
        await done.wait()
        rate = jobs / (time.perf_counter() - started)
        await connection.close()
        return rate
    finally:
        rabbitmqctl("delete_vhost", vhost)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", default="1,3")
    parser.add_argument("--concurrency", type=int, default=128)  # the worker default
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--profile", help="py-spy raw output path for the first worker")
    args = parser.parse_args()
    baseline = anyio.run(raw_broker_drain, args.jobs, args.amqp_url, backend="asyncio")
    print(
        f"{args.jobs:,} queued no-op jobs, {args.concurrency} executors per worker, this machine's RabbitMQ and PostgreSQL"
    )
    print(f"{'what':<44} {'jobs/s':>10} {'vs raw broker drain':>20}")
    print(f"{'raw broker: 1 aiormq consumer, ack each':<44} {baseline:>10,.0f} {'1.00':>20}")
    for n in (int(x) for x in args.workers.split(",")):
        rate = run_taskflow(
            args.jobs, n, args.concurrency, args.database_url, args.amqp_url, args.profile
        )
        print(f"{f'TaskFlow, {n} worker process(es)':<44} {rate:>10,.0f} {rate / baseline:>20.2f}")


if __name__ == "__main__":
    main()
