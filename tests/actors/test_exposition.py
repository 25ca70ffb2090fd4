"""The Prometheus collectors on their own: bounded labels, the cluster's in-flight count from
the workers' heartbeats, a worker's own exposition."""

from __future__ import annotations

import dataclasses

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actors.executor import ExecutorStats
from actors.exposition import HttpStats, SnapshotCollector, WorkerCollector, registry_of
from actors.metrics import MetricsCollector, WorkerView
from taskflow.memory import MemoryEventBus, MemoryJobStore


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def worker(online: bool, busy: int) -> WorkerView:
    return WorkerView(
        online=online, last_seen=1.0, queues=("q",), capacity=8, busy=busy, finished=0, throughput=0
    )


def test_in_flight_is_the_busy_executors_of_the_workers_online() -> None:
    store = MemoryJobStore()
    collector = MetricsCollector(
        events=MemoryEventBus(), queries=store, now=lambda: 1.0, monotonic=lambda: 0.0
    )
    base = collector.snapshot()
    snap = dataclasses.replace(
        base,
        in_flight=0,
        workers={"a": worker(True, 3), "b": worker(True, 2), "c": worker(False, 7)},
    )
    http = HttpStats()
    http.record("/api/v1/jobs", "POST", 202)
    http.record("/api/v1/jobs", "POST", 202)
    got = samples(generate_latest(registry_of(SnapshotCollector(lambda: snap, http))))
    assert got[("taskflow_in_flight", ())] == 5  # c is offline
    key = (("method", "POST"), ("route", "/api/v1/jobs"), ("status", "202"))
    assert got[("taskflow_http_requests_total", key)] == 2
    # no worker heard from: the process's own executors
    alone = dataclasses.replace(base, in_flight=4)
    got = samples(generate_latest(registry_of(SnapshotCollector(lambda: alone, None))))
    assert got[("taskflow_in_flight", ())] == 4


def test_unknown_task_and_queue_names_share_the_other_label() -> None:
    from taskflow.messages import JobSubmitted

    collector = MetricsCollector(
        events=MemoryEventBus(),
        queries=MemoryJobStore(),
        now=lambda: 1.0,
        monotonic=lambda: 0.0,
        known_tasks=frozenset({"resize"}),
        known_queues=frozenset({"images"}),
    )
    for i, (task, queue) in enumerate([("resize", "images"), ("x1", "q1"), ("x2", "q2")]):
        collector._count(JobSubmitted(job_id=str(i), task=task, queue=queue, at=1.0))
    assert collector.snapshot().outcomes == {
        "other": {"other": {"submitted": 2}},
        "resize": {"images": {"submitted": 1}},
    }


def test_a_worker_exposes_its_executors_and_actor_statistics() -> None:
    stats = ExecutorStats(capacity=8, busy=2, started=10, finished=8)
    collector = WorkerCollector(
        executor=lambda: stats,
        sources={"executor": lambda: stats},
        restarts=lambda: {"dispatcher": 1},
    )
    got = samples(generate_latest(registry_of(collector)))
    assert got[("taskflow_executor_capacity", ())] == 8
    assert got[("taskflow_in_flight", ())] == 2
    assert got[("taskflow_worker_attempts_total", (("event", "finished"),))] == 8
    assert got[("taskflow_actor_restarts_total", (("actor", "dispatcher"),))] == 1
    assert got[("taskflow_actor_statistic", (("actor", "executor"), ("field", "started")))] == 10
