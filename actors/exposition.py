"""Prometheus exposition (prometheus-client) of the metrics snapshot and of a worker's actors.

Collectors read their sources at scrape time; each app or worker builds its own
``CollectorRegistry`` (no global registry, no module-level state). Label values are bounded:
task names come from the registry, queues from the settings (anything else is ``other``),
routes from the app's URL rules, actors from the tree's child ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actors.histogram import BUCKETS, LatencySummary
from actors.metrics import MetricsSnapshot
from taskflow.ports.cache import CacheStats

LATENCIES = (
    ("queue_wait", "taskflow_queue_wait_seconds", "From submission (or due time) to the start."),
    ("run_time", "taskflow_run_time_seconds", "From the start of the attempt to its success."),
    ("end_to_end", "taskflow_end_to_end_seconds", "From submission to success."),
)


class HttpStats:
    """Requests served, by route (the URL rule, not the path), method and status."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()

    def record(self, route: str, method: str, status: int) -> None:
        self.requests[(route, method, status)] += 1


def histogram(name: str, documentation: str, summary: LatencySummary) -> HistogramMetricFamily:
    buckets = [(_bound(b), float(n)) for b, n in zip(BUCKETS, summary.buckets, strict=True)]
    buckets.append(("+Inf", float(summary.count)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=summary.total)


class SnapshotCollector(Collector):
    """The metrics actor's snapshot (cluster-wide in distributed mode) and the HTTP layer."""

    def __init__(
        self,
        snapshot: Callable[[], MetricsSnapshot],
        http: HttpStats | None,
        cache: Callable[[], CacheStats] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.http = http
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        jobs = CounterMetricFamily(
            "taskflow_jobs",
            "Job events seen by this collector since it started, by task, queue and event "
            "(submitted, started, succeeded, failed_attempt, retried, dead_lettered, "
            "cancelled, replayed).",
            labels=["task", "queue", "event"],
        )
        for task, queues in s.outcomes.items():
            for queue, kinds in queues.items():
                for kind, n in kinds.items():
                    jobs.add_metric([task, queue, kind], n)
        yield jobs
        for field, name, documentation in LATENCIES:
            yield histogram(name, documentation, getattr(s, field))
        yield _gauges(
            "taskflow_jobs_by_status",
            "Jobs in the store by status (refreshed about every second).",
            "status",
            s.jobs_by_status,
        )
        yield _gauges(
            "taskflow_queue_depth",
            "Messages ready in each queue (from the broker in distributed mode; one carries up to 32 jobs).",
            "queue",
            s.queue_depth,
        )
        online = [w for w in s.workers.values() if w.online]
        yield GaugeMetricFamily(
            "taskflow_in_flight",
            "Attempts running in the workers online (by their last heartbeat), else here.",
            value=sum(w.busy for w in online) if online else s.in_flight,
        )
        yield GaugeMetricFamily(
            "taskflow_workers_online",
            "Workers whose heartbeat arrived within three intervals.",
            value=s.workers_online,
        )
        yield _counters(
            "taskflow_actor_restarts",
            "Restarts of each supervised actor.",
            "actor",
            s.actor_restarts,
        )
        yield CounterMetricFamily(
            "taskflow_events_dropped",
            "Events the bus dropped for slow subscribers.",
            value=s.events_dropped,
        )
        if self.http is not None:
            http = CounterMetricFamily(
                "taskflow_http_requests",
                "HTTP requests served, by route, method and status.",
                labels=["route", "method", "status"],
            )
            for (route, method, status), n in sorted(self.http.requests.items()):
                http.add_metric([route, method, str(status)], n)
            yield http
        if self.cache is not None:
            stats = self.cache()
            cache = CounterMetricFamily(
                "taskflow_cache",
                "Read-cache operations of this process by result (hit, miss, put, "
                "invalidation, bypassed: skipped while Redis was unavailable).",
                labels=["backend", "result"],
            )
            for result, n in (
                ("hit", stats.hits),
                ("miss", stats.misses),
                ("put", stats.puts),
                ("invalidation", stats.invalidations),
                ("bypassed", stats.bypassed),
            ):
                cache.add_metric([stats.backend, result], n)
            yield cache


class WorkerCollector(Collector):
    """One worker process's own view: its executors and the statistics of its actors."""

    def __init__(
        self,
        executor: Callable[[], Any],
        sources: Mapping[str, Callable[[], Any]],
        restarts: Callable[[], Mapping[str, int]],
    ) -> None:
        self.executor = executor
        self.sources = sources
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        stats = self.executor()
        yield GaugeMetricFamily(
            "taskflow_executor_capacity", "Executors of this worker.", value=stats.capacity
        )
        yield GaugeMetricFamily("taskflow_in_flight", "Attempts running here.", value=stats.busy)
        attempts = CounterMetricFamily(
            "taskflow_worker_attempts",
            "Attempts of this worker, by what happened (started, finished, stale_outcomes, "
            "released).",
            labels=["event"],
        )
        for kind in ("started", "finished", "stale_outcomes", "released"):
            attempts.add_metric([kind], getattr(stats, kind))
        yield attempts
        yield _counters(
            "taskflow_actor_restarts",
            "Restarts of each supervised actor.",
            "actor",
            self.restarts(),
        )
        numbers = GaugeMetricFamily(
            "taskflow_actor_statistic",
            "Every numeric field of each actor's statistics(), as last read.",
            labels=["actor", "field"],
        )
        for actor, read in sorted(self.sources.items()):
            for key, value in sorted(_numbers(read()).items()):
                numbers.add_metric([actor, key], value)
        yield numbers


def registry_of(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def _gauges(name: str, documentation: str, label: str, values: Mapping[str, int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _counters(name: str, documentation: str, label: str, values: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _numbers(stats: Any) -> dict[str, float]:
    fields = getattr(stats, "__dataclass_fields__", None)
    items = {name: getattr(stats, name) for name in fields} if fields else {}
    return {
        k: float(v)
        for k, v in items.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _bound(seconds: float) -> str:
    return repr(float(seconds))
