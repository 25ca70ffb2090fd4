"""Many processes on one cluster: `taskflow api` and `taskflow worker` over RabbitMQ and
PostgreSQL, driven over HTTP, with a task that records every execution."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.recording_tasks import CREATE
from tests.e2e.service import Service, http
from tests.rabbit import Vhost

pytestmark = pytest.mark.timeout(600)


@contextmanager
def cluster(
    tmp_path: Path, pg_url: str, vhost: Vhost, *, workers: int, concurrency: int = 8, **extra: str
) -> Iterator[tuple[Service, list[Service]]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(CREATE)
    env = {
        "TASKFLOW_DATABASE_URL": pg_url,
        "TASKFLOW_AMQP_URL": vhost.url,
        "TASKFLOW_TASKS": "tests.e2e.recording_tasks",
        "TASKFLOW_DEMO": "1",  # the cancel test runs the demo `sleep`
        "TASKFLOW_CONCURRENCY": str(concurrency),
        "TASKFLOW_QUEUES": "default",
        "TASKFLOW_LEASE_SECONDS": "6",
        "TASKFLOW_REAPER_INTERVAL_SECONDS": "1",
        **extra,
    }
    (tmp_path / "api").mkdir()
    api = Service(home=tmp_path / "api", env=env, command=("api",))
    pool = []
    for i in range(workers):
        (tmp_path / f"w{i}").mkdir()
        pool.append(Service(home=tmp_path / f"w{i}", env=env, command=("worker",)))
    try:
        api.start()
        for worker in pool:
            worker.start_worker()
        yield api, pool
    finally:
        for service in [api, *pool]:
            service.stop()


def executions(pg_url: str) -> list[tuple[str, int, int, int | None]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT job_id::text, attempt, worker, priority FROM executions ORDER BY seq"
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def wait_counts(api: Service, done: int, timeout: float = 240.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        _, metrics = http("GET", f"{api.url}/api/v1/metrics")
        counts = metrics["jobs_by_status"]
        if counts.get("completed", 0) + counts.get("failed", 0) >= done and not any(
            counts.get(s, 0) for s in ("pending", "scheduled", "in_progress")
        ):
            return counts
        time.sleep(0.5)
    raise AssertionError(f"not done after {timeout} s: {counts}\n{api.tail()}")


def submit_many(
    api: Service, task: str, payloads: list[dict[str, Any]], batch: int = 100
) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(payloads), batch):
        status, body = api.submit(task, payloads[i : i + batch])
        assert status == 202, body
        ids += body["taskIds"]
    return ids


def test_three_workers_run_5000_jobs_each_exactly_once(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost
) -> None:
    with cluster(tmp_path, pg_url, rabbit_vhost, workers=3) as (api, workers):
        ids = submit_many(api, "record", [{"ms": 1} for _ in range(5000)])
        counts = wait_counts(api, 5000)
        assert counts["completed"] == 5000
        rows = executions(pg_url)
        assert len(rows) == 5000  # every job ran exactly once
        assert {job_id for job_id, *_ in rows} == set(ids)
        shares = {
            pid: sum(1 for *_, worker, _ in rows if worker == pid) for pid in workers_pids(workers)
        }
        assert all(share > 0 for share in shares.values()), shares  # every worker took a share
        _, metrics = http("GET", f"{api.url}/api/v1/metrics")
        assert metrics["workers_online"] == 3


def workers_pids(workers: list[Service]) -> list[int]:
    return [w.process.pid for w in workers if w.process is not None]


def test_priorities_overtake_in_a_backlog_and_short_delays_are_not_held_up(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost
) -> None:
    with cluster(tmp_path, pg_url, rabbit_vhost, workers=0) as (api, _):
        # A backlog accepted while no worker runs, in shuffled priorities
        priorities = [3, 9, 0, 7, 5, 1, 8, 2, 6, 4] * 3
        for p in priorities:
            status, body = api.submit("record", [{"priority": p}], priority=p)
            assert status == 202, body
        # A 60 s delay submitted before a 1 s delay
        _, slow = api.submit("record", [{"priority": -60}], delay_seconds=60)
        _, fast = api.submit("record", [{"priority": -1}], delay_seconds=1)
        (tmp_path / "w").mkdir()
        worker = Service(
            home=tmp_path / "w", env={**api.env, "TASKFLOW_CONCURRENCY": "1"}, command=("worker",)
        )
        try:
            worker.start_worker()
            fast_job = api.wait_terminal(fast["taskIds"], timeout=60)[fast["taskIds"][0]]
            assert fast_job["status"] == "completed"
            assert api.job(slow["taskIds"][0])["status"] == "scheduled"  # still waiting its 60 s
            order = [p for *_, p in executions(pg_url) if p is not None and p >= 0]
            assert order == sorted(priorities, reverse=True)
        finally:
            worker.stop()


def test_a_broker_restart_mid_run_loses_no_accepted_job(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost
) -> None:
    with cluster(tmp_path, pg_url, rabbit_vhost, workers=2) as (api, _):
        ids = submit_many(api, "record", [{"ms": 5} for _ in range(1500)])
        time.sleep(1.0)
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=60)
        try:
            time.sleep(5)
        finally:
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
        wait_counts(api, 1500, timeout=300)
        rows = executions(pg_url)
        assert {job_id for job_id, *_ in rows} == set(ids)
        jobs = [api.job(i)["status"] for i in ids[::50]]
        assert set(jobs) == {"completed"}


def test_a_poison_message_is_dead_lettered_and_the_worker_keeps_going(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost
) -> None:
    import anyio

    with cluster(tmp_path, pg_url, rabbit_vhost, workers=1) as (api, _):
        anyio.run(publish_raw, rabbit_vhost.url, "taskflow.default", b"\x00\x01 not a message")
        ids = submit_many(api, "record", [{}] * 5)
        done = api.wait_terminal(ids, timeout=60)
        assert {j["status"] for j in done.values()} == {"completed"}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, page = http("GET", f"{api.url}/api/v1/dlq/messages")
            if page["messages"]:
                break
            time.sleep(0.5)
        (message,) = page["messages"]
        assert message["reason"].startswith("malformed_message")
        assert message["queueName"] == "default"


async def publish_raw(url: str, queue: str, body: bytes) -> None:
    """What any AMQP client can do: put bytes on a work queue, bypassing TaskFlow."""
    import aiormq

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.basic_publish(body, routing_key=queue)
    finally:
        await connection.close()


def test_cancel_reaches_the_worker_running_the_job(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost
) -> None:
    with cluster(tmp_path, pg_url, rabbit_vhost, workers=1) as (api, _):
        status, body = api.submit("sleep", [{"seconds": 120, "steps": 120}])
        assert status == 202, body
        (job_id,) = body["taskIds"]
        deadline = time.monotonic() + 30
        while api.job(job_id)["status"] != "in_progress" and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        status, job = http("POST", f"{api.url}/api/v1/jobs/{job_id}/cancel")
        assert status == 200 and job["cancelRequested"]
        done = api.wait_terminal([job_id], timeout=30)[job_id]
        assert done["status"] == "cancelled"
        assert time.monotonic() - started < 5  # the event, not the lease renewal fallback


def broker_resources(vhost: Vhost) -> tuple[list[str], int]:
    """The vhost's queue names and its number of connections."""
    from tests.rabbit import rabbitmqctl

    queues = sorted(rabbitmqctl("list_queues", "-p", vhost.name, "name").split())
    connections = rabbitmqctl("list_connections", "vhost").split()
    return queues, connections.count(vhost.name)


class Stream:
    """A raw SSE subscriber: reads and keeps everything the server sends."""

    def __init__(self, url: str, path: str) -> None:
        import socket

        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self.data = b""

    def read_until(self, needle: bytes, count: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.data.count(needle) < count:
            assert time.monotonic() < deadline, self.data[-500:]
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            assert chunk, "the stream ended"
            self.data += chunk


def test_live_subscribers_cost_no_broker_queue_or_connection(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost
) -> None:
    with cluster(tmp_path, pg_url, rabbit_vhost, workers=1) as (api, _):
        status, body = api.submit("record", [{}], delay_seconds=600)  # stays open
        assert status == 202, body
        (later,) = body["taskIds"]
        before = broker_resources(rabbit_vhost)
        paths = (
            ["/api/v1/events?limit=0"] * 10
            + [f"/api/v1/jobs/{later}/events"] * 10
            + [f"/api/v1/events?jobs={later}&activity=submitted"] * 10
        )
        streams = [Stream(api.url, path) for path in paths]
        try:
            for stream in streams:
                stream.read_until(b"event: snapshot")
            during = broker_resources(rabbit_vhost)
            _, metrics = http("GET", f"{api.url}/api/v1/metrics")
            assert metrics["actors"]["hub"]["listeners"] == 30
            ids = submit_many(api, "record", [{"n": n} for n in range(50)])
            for stream in streams[:10]:  # every event reaches every all-jobs stream
                stream.read_until(b"event: succeeded\n", count=50)
            for stream in streams[20:]:  # the page-like watches get the submissions counted
                stream.read_until(b"event: activity")
        finally:
            for stream in streams:
                stream.sock.close()
        after = broker_resources(rabbit_vhost)
    assert len(ids) == 50
    assert before == during == after, (before, during, after)
