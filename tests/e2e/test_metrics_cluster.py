"""Metrics in distributed mode: the API's exposition is cluster-wide, and
`taskflow worker --metrics-port` exposes one worker's own; both parsed with prometheus-client."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.recording_tasks import CREATE
from tests.e2e.service import Service, free_port, http
from tests.e2e.test_distributed import submit_many, wait_counts
from tests.rabbit import Vhost

pytestmark = pytest.mark.timeout(300)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


def test_cluster_and_worker_expositions(tmp_path: Path, pg_url: str, rabbit_vhost: Vhost) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(CREATE)
    env = {
        "TASKFLOW_DATABASE_URL": pg_url,
        "TASKFLOW_AMQP_URL": rabbit_vhost.url,
        "TASKFLOW_TASKS": "tests.e2e.recording_tasks",
        "TASKFLOW_QUEUES": "default",
    }
    ports = [free_port(), 0]  # 0: any free port, which the worker logs
    for name in ("api", "w0", "w1"):
        (tmp_path / name).mkdir()
    api = Service(home=tmp_path / "api", env=env, command=("api",))
    workers = [
        Service(home=tmp_path / f"w{i}", env=env, command=("worker", "--metrics-port", str(port)))
        for i, port in enumerate(ports)
    ]
    try:
        api.start()
        for i, worker in enumerate(workers):
            worker.start_worker()
            line = next(
                ln for ln in worker.log.read_text().splitlines() if "metrics_listening" in ln
            )
            bound = int(re.search(r"port[=\":\s]+(\d+)", line).group(1))  # type: ignore[union-attr]
            assert bound > 0 and (ports[i] in (0, bound))
            ports[i] = bound
        submit_many(api, "noop", [{} for _ in range(200)], batch=50)
        counts = wait_counts(api, 200)
        with psycopg.connect(pg_url) as conn:
            (stored,) = conn.execute(
                "SELECT count(*) FROM taskflow_jobs WHERE status = 'completed'"
            ).fetchone() or (0,)
        assert counts["completed"] == stored == 200
        deadline = time.monotonic() + 15
        while True:  # events reach the API's collector through the broker
            cluster = scrape(f"{api.url}/metrics")
            if value(cluster, "taskflow_jobs_total", event="succeeded") == 200:
                break
            assert time.monotonic() < deadline, cluster.get("taskflow_jobs_total")
            time.sleep(0.3)
        assert (
            value(cluster, "taskflow_jobs_total", task="noop", queue="default", event="submitted")
            == 200
        )
        assert value(cluster, "taskflow_jobs_by_status", status="completed") == 200
        assert value(cluster, "taskflow_queue_depth", queue="default") == 0  # from the broker
        assert value(cluster, "taskflow_run_time_seconds_count") == 200
        assert value(cluster, "taskflow_workers_online") == 2
        # each worker's own: the attempts it ran, which add up to the cluster's
        finished = [
            value(
                scrape(f"http://127.0.0.1:{p}/metrics"),
                "taskflow_worker_attempts_total",
                event="finished",
            )
            for p in ports
        ]
        assert sum(finished) == 200, finished
        own = scrape(f"http://127.0.0.1:{ports[0]}/metrics")
        assert value(own, "taskflow_executor_capacity") > 0
        assert value(own, "taskflow_actor_statistic", actor="dispatcher") > 0
        status, body = http("GET", f"{api.url}/api/v1/metrics")
        assert status == 200
        assert body["dashboardMetrics"]["completed"] == 200
        assert body["systemHealth"] == {"messagesReady": 0, "workersOnline": 2}
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/other", timeout=5)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        for service in [api, *workers]:
            service.stop()
