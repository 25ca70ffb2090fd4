from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from actors.histogram import BUCKETS, LatencyHistogram, LatencySummary, RateWindow
from actors.metrics import MetricsCollector, TaskCounters
from taskflow.jobs import Job, JobError, JobStatus
from taskflow.memory.events import MemoryEventBus
from taskflow.memory.store import MemoryJobStore
from taskflow.messages import (
    Event,
    JobCancelled,
    JobDeadLettered,
    JobFailed,
    JobProgressed,
    JobReplayed,
    JobScheduled,
    JobStarted,
    JobSubmitted,
    JobSucceeded,
    WorkerHeartbeat,
)

pytestmark = pytest.mark.anyio

BOOM = JobError(code="task_error", message="boom")


@pytest.fixture(scope="module", params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


async def wait_until(predicate: Callable[[], bool]) -> None:
    # Polling: the collector exposes no event to wait on, and tests must not grow one.
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.001)


class FakeMonotonic:
    def __init__(self, start: float) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeLoad:
    busy: int
    capacity: int


class Phase(enum.Enum):
    RUNNING = "running"


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeSupervisorStats:
    restarts: Mapping[str, int]
    running: tuple[str, ...]
    phase: Phase


def collector_for(bus: MemoryEventBus, store: MemoryJobStore, **kwargs: Any) -> MetricsCollector:
    return MetricsCollector(events=bus, queries=store, now=lambda: 1_700_000_000.0, **kwargs)


# ------------------------------------------------------------------ histogram


def test_histogram_percentiles_on_known_data() -> None:
    histogram = LatencyHistogram()
    for seconds in reversed(range(1, 101)):
        histogram.record(float(seconds))

    assert core(histogram.snapshot()) == core_of(
        count=100, mean=50.5, p50=50.0, p95=95.0, p99=99.0, max=100.0
    )


def test_histogram_empty_is_all_zeros() -> None:
    assert core(LatencyHistogram().snapshot()) == core_of(
        count=0, mean=0.0, p50=0.0, p95=0.0, p99=0.0, max=0.0
    )


def test_histogram_ring_buffer_keeps_recent_samples_and_total_count() -> None:
    histogram = LatencyHistogram(max_samples=10)
    for seconds in range(1, 101):
        histogram.record(float(seconds))
    histogram.record(0.5)

    summary = histogram.snapshot()
    # Percentiles see only the last 10 samples: 92..100 and 0.5.
    assert summary.p50 == 95.0
    assert summary.p99 == 100.0
    # count, mean and max cover everything.
    assert summary.count == 101
    assert summary.mean == pytest.approx((5050 + 0.5) / 101)
    assert summary.max == 100.0


def test_histogram_max_of_negative_samples() -> None:
    histogram = LatencyHistogram()
    histogram.record(-2.0)
    histogram.record(-1.0)
    assert histogram.snapshot().max == -1.0


# ------------------------------------------------------------------ rate window


def test_rate_window_counts_full_seconds_only() -> None:
    window = RateWindow()
    window.add(100.1)
    window.add(100.9, n=2)
    window.add(101.5, n=4)

    # During second 101 the last full second is 100; second 101 is still in progress.
    assert window.rate_1s(101.9) == 3.0
    assert window.rate_60s(101.9) == 3 / 60
    # During second 102 the last full second is 101.
    assert window.rate_1s(102.0) == 4.0
    assert window.rate_60s(102.0) == 7 / 60
    # Nothing happened during second 102.
    assert window.rate_1s(103.2) == 0.0


def test_rate_window_forgets_seconds_older_than_60() -> None:
    window = RateWindow()
    window.add(100.0, n=5)
    window.add(130.0, n=1)

    assert window.rate_60s(160.5) == 6 / 60  # seconds 100..159
    assert window.rate_60s(161.0) == 1 / 60  # second 100 fell out
    assert window.rate_60s(191.0) == 0.0

    # A slot reused a lap later starts from zero.
    window.add(161.0, n=2)  # the slot second 100 had
    assert window.rate_1s(162.0) == 2.0
    assert window.rate_60s(162.0) == 3 / 60


# ------------------------------------------------------------------ collector


def two_tasks_events() -> list[Event]:
    """Given: job a (email) waits 2 s, runs 3 s, succeeds 6 s after creation; job b (resize)
    fails, is retried, fails again and is dead-lettered, then replayed; job c (email) is
    cancelled."""
    return [
        JobSubmitted(job_id="a", task="email", queue="default", at=1000.0),
        JobSubmitted(job_id="b", task="resize", queue="default", at=1000.0),
        JobSubmitted(job_id="c", task="email", queue="default", at=1000.0),
        JobStarted(job_id="a", task="email", attempt=1, at=1002.0, queued_at=1000.0),
        JobStarted(job_id="b", task="resize", attempt=1, at=1004.0, queued_at=1000.0),
        JobProgressed(job_id="a", attempt=1, percent=50.0, message=None, at=1003.0),
        JobSucceeded(
            job_id="a", task="email", attempt=1, at=1005.0, started_at=1002.0, created_at=999.0
        ),
        JobFailed(
            job_id="b",
            task="resize",
            attempt=1,
            max_attempts=2,
            at=1005.0,
            started_at=1004.0,
            error=BOOM,
            will_retry=True,
        ),
        JobScheduled(job_id="b", attempt=1, run_at=1006.0, at=1005.0, error=BOOM),
        JobStarted(job_id="b", task="resize", attempt=2, at=1010.0, queued_at=1006.0),
        JobFailed(
            job_id="b",
            task="resize",
            attempt=2,
            max_attempts=2,
            at=1011.0,
            started_at=1010.0,
            error=BOOM,
            will_retry=False,
        ),
        JobDeadLettered(job_id="b", task="resize", attempt=2, at=1011.0, error=BOOM),
        JobReplayed(job_id="b", replay_count=1, at=1020.0),
        JobCancelled(job_id="c", task="email", attempt=0, at=1001.0),
    ]


async def test_collector_counts_events_per_task_and_in_total() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    collector = collector_for(bus, store)
    events = two_tasks_events()

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        await bus.publish(events)
        await wait_until(lambda: collector.statistics().events_seen == len(events))
        snapshot = collector.snapshot()
        tg.cancel_scope.cancel()

    assert snapshot.tasks == {
        "email": TaskCounters(submitted=2, started=1, succeeded=1, cancelled=1),
        "resize": TaskCounters(
            submitted=1, started=2, failed_attempts=2, retried=1, dead_lettered=1, replayed=1
        ),
    }
    assert snapshot.totals == TaskCounters(
        submitted=3,
        started=3,
        succeeded=1,
        failed_attempts=2,
        retried=1,
        dead_lettered=1,
        cancelled=1,
        replayed=1,
    )
    assert snapshot.at == 1_700_000_000.0


async def test_collector_latencies_follow_event_times() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    collector = collector_for(bus, store)
    events = two_tasks_events()

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        await bus.publish(events)
        await wait_until(lambda: collector.statistics().events_seen == len(events))
        snapshot = collector.snapshot()
        tg.cancel_scope.cancel()

    # Queue waits: a 2 s, b 4 s, b again 4 s.
    assert core(snapshot.queue_wait) == core_of(
        count=3, mean=10 / 3, p50=4.0, p95=4.0, p99=4.0, max=4.0
    )
    assert core(snapshot.run_time) == core_of(count=1, mean=3.0, p50=3.0, p95=3.0, p99=3.0, max=3.0)
    assert core(snapshot.end_to_end) == core_of(
        count=1, mean=6.0, p50=6.0, p95=6.0, p99=6.0, max=6.0
    )


async def test_collector_rates_follow_the_monotonic_clock() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    clock = FakeMonotonic(500.2)
    collector = collector_for(bus, store, monotonic=clock)
    succeeded = [
        JobSucceeded(job_id=f"s{i}", task="t", attempt=1, at=1.0, started_at=0.0, created_at=0.0)
        for i in range(3)
    ]
    failed = JobFailed(
        job_id="f",
        task="t",
        attempt=1,
        max_attempts=3,
        at=1.0,
        started_at=0.0,
        error=BOOM,
        will_retry=True,
    )

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        await bus.publish([*succeeded, failed])
        await wait_until(lambda: collector.statistics().events_seen == 4)
        during = collector.snapshot()
        clock.value = 501.0
        after = collector.snapshot()
        tg.cancel_scope.cancel()

    assert (during.throughput_1s, during.failures_1s) == (0.0, 0.0)  # second 500 not over yet
    assert (after.throughput_1s, after.throughput_60s) == (3.0, 3 / 60)
    assert (after.failures_1s, after.failures_60s) == (1.0, 1 / 60)


async def test_collector_names_jobs_it_remembers_and_evicts_the_least_recent() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    collector = collector_for(bus, store, max_known_jobs=2)
    events: list[Event] = [
        JobSubmitted(job_id="old", task="email", queue="q", at=1.0),
        JobSubmitted(job_id="mid", task="email", queue="q", at=1.0),
        JobStarted(job_id="old", task="email", attempt=1, at=1.0, queued_at=1.0),  # old is recent
        JobSubmitted(job_id="new", task="resize", queue="q", at=1.0),  # evicts mid
        JobScheduled(job_id="old", attempt=1, run_at=2.0, at=1.0),
        JobReplayed(job_id="mid", replay_count=1, at=1.0),
        JobReplayed(job_id="new", replay_count=1, at=1.0),
        # Buried without a JobFailed (a lost lease), then replayed: the task is still known.
        JobDeadLettered(job_id="lost", task="resize", attempt=3, at=1.0, error=BOOM),
        JobReplayed(job_id="lost", replay_count=1, at=1.0),
    ]

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        await bus.publish(events)
        await wait_until(lambda: collector.statistics().events_seen == len(events))
        tasks = collector.snapshot().tasks
        tg.cancel_scope.cancel()

    assert tasks == {
        "email": TaskCounters(submitted=2, started=1, retried=1),
        "resize": TaskCounters(submitted=1, dead_lettered=1, replayed=2),
        "unknown": TaskCounters(replayed=1),
    }


async def test_collector_jobs_by_status_follow_the_store_after_refresh() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    await store.insert(
        [Job(id="p1", task="email"), Job(id="s1", task="email", status=JobStatus.SCHEDULED)],
        now=10.0,
    )
    collector = collector_for(bus, store, refresh_interval=3600.0)

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        # Given: counts read once before the collector reported ready.
        initial = collector.snapshot().jobs_by_status
        # When: the store changes, the snapshot keeps the last counts until a refresh.
        await store.insert(
            [
                Job(id="p2", task="resize"),
                Job(id="c1", task="resize", status=JobStatus.COMPLETED),
                Job(id="f1", task="resize", status=JobStatus.FAILED),
            ],
            now=11.0,
        )
        stale = collector.snapshot().jobs_by_status
        await collector.refresh()
        fresh = collector.snapshot().jobs_by_status
        tg.cancel_scope.cancel()

    expected_initial = dict.fromkeys((s.value for s in JobStatus), 0) | {
        "pending": 1,
        "scheduled": 1,
    }
    assert initial == stale == expected_initial
    assert fresh == {status.value: n for status, n in store.counts_nowait().items()}
    assert fresh["pending"] == 2
    assert fresh["completed"] == 1
    assert fresh["failed"] == 1


async def test_collector_refreshes_periodically_and_survives_a_failing_store() -> None:
    class FlakyStore(MemoryJobStore):
        calls = 0

        async def counts(self) -> Mapping[JobStatus, int]:
            self.calls += 1
            if self.calls == 2:
                raise ConnectionError("database went away")
            return await super().counts()

    bus, store = MemoryEventBus(), FlakyStore()
    collector = collector_for(bus, store, refresh_interval=0.01)

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(collector.run)
            await store.insert([Job(id="p1", task="email")], now=1.0)
            await wait_until(lambda: collector.snapshot().jobs_by_status["pending"] == 1)
            tg.cancel_scope.cancel()

    assert collector.statistics().refresh_failures == 1
    assert [log["event"] for log in logs] == ["metrics_refresh_failed"]
    assert "database went away" in logs[0]["error"]


async def test_collector_reads_executor_restarts_and_actor_statistics() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    supervisor_stats = FakeSupervisorStats(
        restarts=MappingProxyType({"executor": 2}),
        running=("ingest", "executor"),
        phase=Phase.RUNNING,
    )
    collector = collector_for(
        bus,
        store,
        executor=lambda: FakeLoad(busy=3, capacity=4),
        restarts=lambda: {"executor": 2, "retrier": 0},
        statistics_sources={"supervisor": lambda: supervisor_stats},
    )

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        snapshot = collector.snapshot()
        tg.cancel_scope.cancel()

    assert snapshot.in_flight == 3
    assert snapshot.executor_utilisation == 0.75
    assert snapshot.actor_restarts == {"executor": 2, "retrier": 0}
    assert snapshot.actors == {
        "supervisor": {
            "restarts": {"executor": 2},
            "running": ["ingest", "executor"],
            "phase": "running",
        }
    }


async def test_collector_without_sources_reports_zeros() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    collector = collector_for(bus, store, executor=lambda: FakeLoad(busy=0, capacity=0))

    snapshot = collector.snapshot()

    assert (snapshot.in_flight, snapshot.executor_utilisation) == (0, 0.0)
    assert snapshot.actor_restarts == {}
    assert snapshot.actors == {}
    assert snapshot.events_dropped == 0


async def test_collector_reports_events_it_missed() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    collector = collector_for(bus, store)
    flood = [
        JobProgressed(job_id="a", attempt=1, percent=float(i % 100), message=None, at=1.0)
        for i in range(5000)
    ]

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        bus.publish_nowait(flood)  # faster than the collector can read: its buffer overflows
        await wait_until(lambda: collector.statistics().events_seen + bus.dropped == 5000)
        snapshot = collector.snapshot()
        tg.cancel_scope.cancel()

    # 4096 fit in the buffer; one more if the collector was already waiting to receive.
    assert collector.statistics().events_seen in (4096, 4097)
    assert snapshot.events_dropped == 5000 - collector.statistics().events_seen
    assert snapshot.totals == TaskCounters()  # progress events are not counted


async def test_snapshot_to_dict_is_json_ready() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    collector = collector_for(
        bus,
        store,
        executor=lambda: FakeLoad(busy=1, capacity=2),
        restarts=lambda: {"executor": 1},
        statistics_sources={
            "supervisor": lambda: FakeSupervisorStats(
                restarts=MappingProxyType({"executor": 1}), running=(), phase=Phase.RUNNING
            )
        },
    )
    events = two_tasks_events()

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        await bus.publish(events)
        await wait_until(lambda: collector.statistics().events_seen == len(events))
        snapshot = collector.snapshot()
        tg.cancel_scope.cancel()

    decoded = json.loads(json.dumps(snapshot.to_dict()))

    assert decoded["tasks"]["resize"]["retried"] == 1
    assert decoded["totals"]["submitted"] == 3
    run_time = decoded["run_time"]
    assert {k: run_time[k] for k in ("count", "mean", "p50", "p95", "p99", "max", "total")} == {
        "count": 1,
        "mean": 3.0,
        "p50": 3.0,
        "p95": 3.0,
        "p99": 3.0,
        "max": 3.0,
        "total": 3.0,
    }
    # cumulative bucket counts: nothing at or below 2.5 s, the sample from 5 s on
    assert run_time["buckets"] == [0 if b < 3.0 else 1 for b in BUCKETS]
    assert decoded["jobs_by_status"] == {status.value: 0 for status in JobStatus}
    assert decoded["actors"]["supervisor"]["phase"] == "running"
    assert decoded["executor_utilisation"] == 0.5


async def test_collector_sees_every_worker_by_its_heartbeats() -> None:
    bus, store = MemoryEventBus(), MemoryJobStore()
    clock = FakeMonotonic(100.0)
    collector = collector_for(bus, store, monotonic=clock)

    def beat(worker: str, at: float, finished: int) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            worker_id=worker,
            at=at,
            interval=2.0,
            queues=("default",),
            capacity=8,
            busy=2,
            started=finished + 2,
            finished=finished,
        )

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        await bus.publish([beat("w1", 1000.0, 10), beat("w2", 1000.0, 0), beat("w1", 1002.0, 50)])
        await wait_until(lambda: collector.statistics().events_seen == 3)
        now = collector.snapshot()
        clock.value = 102.9  # silent for 2.9 s: less than 1.5 intervals, still online
        later = collector.snapshot()
        clock.value = 103.1  # past 1.5 intervals: offline (shown gone within 2 intervals)
        gone = collector.snapshot()
        tg.cancel_scope.cancel()

    assert now.workers_online == 2
    assert now.workers["w1"].throughput == 20.0  # (50 - 10) finished in 2 s
    assert (now.workers["w1"].capacity, now.workers["w1"].busy) == (8, 2)
    assert now.workers["w2"].throughput == 0.0
    assert later.workers_online == 2
    assert gone.workers_online == 0 and not gone.workers["w1"].online
    assert json.loads(json.dumps(now.to_dict()))["workers"]["w1"]["finished"] == 50


def core(summary: LatencySummary) -> tuple[float, ...]:
    """The summary without its buckets and sum (checked on their own)."""
    return (summary.count, summary.mean, summary.p50, summary.p95, summary.p99, summary.max)


def core_of(**fields: float) -> tuple[float, ...]:
    return core(LatencySummary(**fields))  # type: ignore[arg-type]


def test_histogram_buckets_are_cumulative_and_sum_every_sample() -> None:
    histogram = LatencyHistogram(max_samples=2)
    for seconds in (0.0005, 0.001, 0.3, 7.0, 5000.0):
        histogram.record(seconds)
    summary = histogram.snapshot()
    by_bound = dict(zip(BUCKETS, summary.buckets, strict=True))
    assert (by_bound[0.001], by_bound[0.25], by_bound[0.5], by_bound[10.0]) == (2, 2, 3, 4)
    assert by_bound[3600.0] == 4 and summary.count == 5  # the 5000 s one is only in +Inf
    assert summary.total == pytest.approx(5007.3015)
