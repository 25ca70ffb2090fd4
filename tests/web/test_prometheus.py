"""GET /metrics (Prometheus text, parsed with prometheus-client's parser) and the seed's
fields of GET /api/v1/metrics, checked against the store after a run of jobs."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.runtime import Runtime
from tests.web.helpers import Client, submit, terminal, wait_all

pytestmark = pytest.mark.anyio


async def scrape(client: Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = await response.get_data(as_text=True)
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


async def run_jobs(client: Client, runtime: Runtime) -> None:
    ok = await submit(client, "echo", [{"i": i} for i in range(7)])
    other = await submit(client, "echo", [{}, {}], queue_name="other")
    dead = await submit(client, "fail", [{}])
    await wait_all(client, ok + other + dead, terminal)
    # the metrics actor sees the last events and its next count refresh (about 1 s)
    with anyio.fail_after(10):
        while True:
            snapshot = runtime.metrics()
            if snapshot.jobs_by_status["completed"] == 9 and snapshot.totals.succeeded == 9:
                return
            await anyio.sleep(0.05)


async def test_the_exposition_agrees_with_the_store(client: Client, runtime: Runtime) -> None:
    await run_jobs(client, runtime)
    samples = await scrape(client)
    counts = await runtime.resources.queries.counts()
    completed = counts[next(s for s in counts if s.value == "completed")]
    failed = counts[next(s for s in counts if s.value == "failed")]
    assert (completed, failed) == (9, 1)
    jobs = "taskflow_jobs_total"
    assert value(samples, jobs, event="succeeded") == completed
    assert value(samples, jobs, task="echo", queue="default", event="succeeded") == 7
    assert value(samples, jobs, task="echo", queue="other", event="succeeded") == 2
    assert value(samples, jobs, task="fail", event="dead_lettered") == failed
    assert value(samples, jobs, task="fail", event="failed_attempt") == 2  # max_attempts 2
    assert value(samples, jobs, task="fail", event="retried") == 1
    assert value(samples, jobs, event="submitted") == 10
    status = "taskflow_jobs_by_status"
    assert value(samples, status, status="completed") == completed
    assert value(samples, status, status="failed") == failed
    assert value(samples, status, status="pending") == 0
    # histograms: cumulative buckets, +Inf = count = successes
    for name in ("taskflow_run_time_seconds", "taskflow_end_to_end_seconds"):
        buckets = [(float(lab["le"]), v) for lab, v in samples[f"{name}_bucket"]]
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        assert buckets[-1] == (float("inf"), completed)
        assert value(samples, f"{name}_count") == completed
        assert value(samples, f"{name}_sum") >= 0
    assert value(samples, "taskflow_queue_depth", queue="default") == 0
    assert value(samples, "taskflow_in_flight") == 0
    # HTTP requests by route (the rule, not the path) and status
    http = "taskflow_http_requests_total"
    assert value(samples, http, route="/api/v1/jobs", method="POST", status="202") == 3
    assert value(samples, http, route="/api/v1/jobs/<task_id>", method="GET") >= 10
    assert all(lab["route"].startswith("/") for lab, _ in samples[http])


async def test_labels_stay_bounded(client: Client, runtime: Runtime) -> None:
    # Unknown paths share one route label, whatever the path
    for i in range(5):
        await client.get(f"/no/such/path/{i}")
    samples = await scrape(client)
    routes = {lab["route"] for lab, _ in samples["taskflow_http_requests_total"]}
    assert "unmatched" in routes and not any("/no/such" in r for r in routes)


async def test_the_seed_metrics_fields(client: Client, runtime: Runtime) -> None:
    await run_jobs(client, runtime)
    body = await (await client.get("/api/v1/metrics")).get_json()
    assert body["dashboardMetrics"] == {
        "totalTasks": 10,
        "pending": 0,
        "inProgress": 0,
        "completed": 9,
        "failed": 1,
        "dlqCounts": 1,
    }
    assert body["systemHealth"]["messagesReady"] == 0
    assert isinstance(body["systemHealth"]["workersOnline"], int)
    assert body["avgProcessingTimeSeconds"] == pytest.approx(body["run_time"]["mean"])
    assert body["avgProcessingTimeSeconds"] > 0
    assert body["outcomes"]["echo"]["other"]["succeeded"] == 2
    assert body["queue_depth"] == {"default": 0, "other": 0}
