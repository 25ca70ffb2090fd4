"""The metrics actor: job events and the actors' statistics() folded into one snapshot."""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Protocol

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import ObjectReceiveStream, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from actors.histogram import LatencyHistogram, LatencySummary, RateWindow
from taskflow.jobs import JobStatus
from taskflow.log import get_logger
from taskflow.messages import (
    Event,
    JobCancelled,
    JobDeadLettered,
    JobFailed,
    JobReplayed,
    JobScheduled,
    JobStarted,
    JobSubmitted,
    JobSucceeded,
    WorkerHeartbeat,
)
from taskflow.ports.events import EventBus
from taskflow.ports.store import JobQueries
from taskflow.streams import receive_batch

_logger = get_logger(__name__)

OFFLINE_AFTER = 1.5
"""A worker is offline once it has been silent this many heartbeat intervals: a dashboard
that updates every second shows it gone within two intervals of its last heartbeat."""
HISTORY_POINTS = 600
"""Samples kept by ``history()``: 10 minutes at one refresh a second."""
RECENT_FAILURES = 50

UNKNOWN_TASK = "unknown"
UNKNOWN_QUEUE = "unknown"
OTHER = "other"
"""The label of a task or queue name that is neither registered nor configured: labels stay
bounded whatever names reach the event bus."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCounters:
    submitted: int = 0
    started: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    retried: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    replayed: int = 0


@dataclass(slots=True)
class _Tally:
    """The mutable twin of ``TaskCounters``, bumped once per event."""

    submitted: int = 0
    started: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    retried: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    replayed: int = 0

    def freeze(self) -> TaskCounters:
        return TaskCounters(**{f.name: getattr(self, f.name) for f in fields(TaskCounters)})


def _sum(counters: Iterable[TaskCounters]) -> TaskCounters:
    total = _Tally()
    for counter in counters:
        for f in fields(TaskCounters):
            setattr(total, f.name, getattr(total, f.name) + getattr(counter, f.name))
    return total.freeze()


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSnapshot:
    at: float
    """Epoch seconds of the snapshot."""
    jobs_by_status: Mapping[str, int]
    """Every ``JobStatus`` value -> jobs in the store, as of the last refresh."""
    tasks: Mapping[str, TaskCounters]
    totals: TaskCounters
    throughput_1s: float
    """Jobs succeeded per second over the last full second."""
    throughput_60s: float
    """... averaged over the last 60 full seconds."""
    failures_1s: float
    failures_60s: float
    queue_wait: LatencySummary
    run_time: LatencySummary
    end_to_end: LatencySummary
    in_flight: int
    executor_utilisation: float
    actor_restarts: Mapping[str, int]
    actors: Mapping[str, Mapping[str, Any]]
    events_dropped: int
    workers: Mapping[str, WorkerView] = field(default_factory=dict)
    """Every worker heard from in the cluster (by its heartbeats), online or not."""
    workers_online: int = 0
    outcomes: Mapping[str, Mapping[str, Mapping[str, int]]] = field(default_factory=dict)
    """task -> queue -> event kind (``submitted``, ``started``, ``succeeded``,
    ``failed_attempt``, ``retried``, ``dead_lettered``, ``cancelled``, ``replayed``) -> count.
    Names outside the known tasks and queues count as ``other``; a job whose submission this
    collector did not see has queue ``unknown``."""
    queue_depth: Mapping[str, int] = field(default_factory=dict)
    """Messages ready in each queue (from the broker in distributed mode), as of the last
    refresh."""
    actors_running: tuple[str, ...] = ()
    """The supervisor's children that are running now (the others are restarting or
    stopped)."""
    recent_failures: tuple[FailureView, ...] = ()
    """The last failed attempts seen on the bus, newest first."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, strings and numbers: ready for ``json.dumps``."""
        return _as_dict(self)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    return value


def _as_dict(value: Any) -> dict[str, Any]:
    """A dataclass or mapping as plain data. Unlike ``dataclasses.asdict`` it copes with
    read-only mappings (``MappingProxyType``) and enums, which ``statistics()`` may return."""
    plain = _plain(value)
    if not isinstance(plain, dict):
        raise TypeError(f"expected a dataclass or a mapping, got {type(value).__name__}")
    return plain


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureView:
    """One failed attempt, as the dashboard's table of recent failures shows it."""

    job_id: str
    task: str
    attempt: int
    at: float
    code: str
    message: str
    will_retry: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryPoint:
    """One sample of ``history()``, taken at each refresh."""

    at: float
    throughput: float
    """Jobs succeeded per second over the last full second."""
    failures: float
    p50: float
    p95: float
    p99: float
    """End-to-end latency percentiles (seconds) of the recent jobs."""
    queue_depth: Mapping[str, int]
    dead_letters: int
    workers_online: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerView:
    """One worker as its heartbeats describe it."""

    online: bool
    last_seen: float
    queues: tuple[str, ...]
    capacity: int
    busy: int
    finished: int
    throughput: float
    """Attempts finished per second between its last two heartbeats."""


class ExecutorLoad(Protocol):
    """What the executor pool's ``statistics()`` has at least (read-only is enough)."""

    @property
    def busy(self) -> int: ...

    @property
    def capacity(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsStats:
    events_seen: int
    refresh_failures: int


@dataclass(kw_only=True, repr=False)
class MetricsCollector:
    """Fold job events, job counts and every actor's ``statistics()`` into ``snapshot()``.

    Inputs: every ``Event`` on ``events`` (a subscription of 4096; what it misses shows in
    ``events_dropped``); ``queries.counts()`` every ``refresh_interval`` seconds; the
    ``statistics_sources``, ``executor`` and ``restarts`` callables, read at each snapshot.
    Outputs: ``snapshot()`` for REST, Prometheus and the dashboard; structlog event
    ``metrics_refresh_failed`` when counts cannot be read (the last counts are kept).
    Restart: permanent. State: in memory, kept across restarts of ``run`` (events published
    while it is down are not counted); the job counts live in the JobStore.
    Time: ``now`` gives epoch seconds for ``snapshot().at``; rates follow ``monotonic``
    (``anyio.current_time`` by default, so trio's MockClock drives them).
    """

    events: EventBus
    queries: JobQueries
    now: Callable[[], float]
    statistics_sources: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    executor: Callable[[], ExecutorLoad] | None = None
    restarts: Callable[[], Mapping[str, int]] | None = None
    running: Callable[[], Sequence[str]] | None = None
    """The supervisor's running children (for ``actors_running``)."""
    refresh_interval: float = 1.0
    query_timeout: float = 5.0
    monotonic: Callable[[], float] = anyio.current_time
    max_known_jobs: int = 100_000
    """How many job id -> task name entries to keep (for events that carry no task name)."""
    known_tasks: frozenset[str] | None = None
    """The task names labels may take (the registry's); others are ``other``. None: any."""
    known_queues: frozenset[str] | None = None
    queue_depths: Callable[[], Awaitable[Mapping[str, int]]] | None = None
    """Read with the job counts at each refresh."""
    counts: Callable[[], Awaitable[Mapping[JobStatus, int]]] | None = None
    """Where the job counts come from (the cache's); ``None``: ``queries.counts``."""

    _tallies: dict[str, _Tally] = field(default_factory=dict, init=False)
    _task_of: dict[str, tuple[str, str]] = field(default_factory=dict, init=False)
    """job id -> (task, queue) labels."""
    _outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter, init=False)
    _depths: dict[str, int] = field(default_factory=dict, init=False)
    _by_status: dict[str, int] = field(default_factory=lambda: _status_counts({}), init=False)
    _queue_wait: LatencyHistogram = field(default_factory=LatencyHistogram, init=False)
    _run_time: LatencyHistogram = field(default_factory=LatencyHistogram, init=False)
    _end_to_end: LatencyHistogram = field(default_factory=LatencyHistogram, init=False)
    _succeeded: RateWindow = field(default_factory=RateWindow, init=False)
    _failed: RateWindow = field(default_factory=RateWindow, init=False)
    _history: deque[HistoryPoint] = field(
        default_factory=lambda: deque(maxlen=HISTORY_POINTS), init=False
    )
    _failures: deque[FailureView] = field(
        default_factory=lambda: deque(maxlen=RECENT_FAILURES), init=False
    )
    _events_seen: int = field(default=0, init=False)
    _refresh_failures: int = field(default=0, init=False)
    _inbox: ObjectReceiveStream[Event] | None = field(default=None, init=False)
    _workers: dict[str, tuple[WorkerHeartbeat, float, float]] = field(
        default_factory=dict, init=False
    )
    """worker id -> (last heartbeat, monotonic time it arrived, throughput)."""

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        async with self.events.subscribe(buffer=4096) as inbox:
            self._inbox = inbox
            await self.refresh()
            self.sample()
            task_status.started()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._refresh_periodically)
                while True:
                    try:
                        batch = await receive_batch(inbox, 4096)
                    except anyio.EndOfStream:
                        break
                    for event in batch:
                        self._count(event)
                tg.cancel_scope.cancel()

    def backlog(self) -> int:
        """Events received but not yet counted (0 when the snapshot is up to date)."""
        if isinstance(self._inbox, MemoryObjectReceiveStream):
            return self._inbox.statistics().current_buffer_used
        return 0

    async def refresh(self) -> None:
        """Re-read the job counts from the store, then the queue depths from the transport.
        Raises what either raises, or ``TimeoutError`` after ``query_timeout`` seconds."""
        with anyio.fail_after(self.query_timeout):
            counts = await (self.counts or self.queries.counts)()
        self._by_status = _status_counts(counts)
        if self.queue_depths is not None:
            with anyio.fail_after(self.query_timeout):
                self._depths = dict(await self.queue_depths())

    async def _refresh_periodically(self) -> None:
        while True:
            await anyio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except Exception as exc:  # metrics must not take the tree down with the database
                self._refresh_failures += 1
                _logger.warning("metrics_refresh_failed", actor="metrics", error=repr(exc))
            self.sample()

    def sample(self) -> HistoryPoint:
        """Add a point to ``history()`` from the current snapshot (each refresh does)."""
        snap = self.snapshot()
        point = HistoryPoint(
            at=snap.at,
            throughput=snap.throughput_1s,
            failures=snap.failures_1s,
            p50=snap.end_to_end.p50,
            p95=snap.end_to_end.p95,
            p99=snap.end_to_end.p99,
            queue_depth=dict(snap.queue_depth),
            dead_letters=snap.jobs_by_status.get(JobStatus.FAILED.value, 0),
            workers_online=snap.workers_online,
        )
        self._history.append(point)
        return point

    def history(self) -> list[HistoryPoint]:
        """The samples of the last ``HISTORY_POINTS`` refreshes (10 minutes at 1 s), oldest
        first: what a dashboard that opens now draws before the live points."""
        return list(self._history)

    def _count(self, event: Event) -> None:
        self._events_seen += 1
        if isinstance(event, WorkerHeartbeat):
            self._heard(event)
            return
        match event:
            case JobSubmitted(job_id=job_id, task=task, queue=queue):
                self._learn(job_id, task, queue, "submitted").submitted += 1
            case JobStarted(job_id=job_id, task=task):
                self._learn(job_id, task, None, "started").started += 1
                self._queue_wait.record(_elapsed(event.queued_at, event.at))
            case JobSucceeded(job_id=job_id, task=task):
                self._learn(job_id, task, None, "succeeded").succeeded += 1
                self._forget(job_id)
                self._run_time.record(_elapsed(event.started_at, event.at))
                self._end_to_end.record(_elapsed(event.created_at, event.at))
                self._succeeded.add(self.monotonic())
            case JobFailed(job_id=job_id, task=task):
                self._learn(job_id, task, None, "failed_attempt").failed_attempts += 1
                self._failed.add(self.monotonic())
                self._failures.appendleft(
                    FailureView(
                        job_id=job_id,
                        task=task,
                        attempt=event.attempt,
                        at=event.at,
                        code=event.error.code,
                        message=event.error.message[:500],
                        will_retry=event.will_retry,
                    )
                )
            case JobScheduled(job_id=job_id):
                self._known(job_id, "retried").retried += 1
            case JobDeadLettered(job_id=job_id, task=task):
                # kept: a replay may follow
                self._learn(job_id, task, None, "dead_lettered").dead_lettered += 1
            case JobCancelled(job_id=job_id, task=task):
                self._learn(job_id, task, None, "cancelled").cancelled += 1
                self._forget(job_id)
            case JobReplayed(job_id=job_id):
                self._known(job_id, "replayed").replayed += 1
            case _:
                pass

    def _tally(self, task: str) -> _Tally:
        tally = self._tallies.get(task)
        if tally is None:
            tally = self._tallies[task] = _Tally()
        return tally

    def _learn(self, job_id: str, task: str, queue: str | None, kind: str) -> _Tally:
        """Remember ``job_id``'s task and queue (most recent last, oldest evicted), count
        ``kind`` under their labels; the task's tally."""
        known = self._task_of.pop(job_id, None)
        if queue is None:
            queue = known[1] if known is not None else UNKNOWN_QUEUE
        self._task_of[job_id] = (task, queue)
        if len(self._task_of) > self.max_known_jobs:
            del self._task_of[next(iter(self._task_of))]
        self._outcomes[(self._label(task, self.known_tasks), self._queue_label(queue), kind)] += 1
        return self._tally(task)

    def _known(self, job_id: str, kind: str) -> _Tally:
        """For events without a task name: what is remembered of the job."""
        known = self._task_of.get(job_id)
        if known is None:  # not learnt: it would evict a job we do know
            self._outcomes[(UNKNOWN_TASK, UNKNOWN_QUEUE, kind)] += 1
            return self._tally(UNKNOWN_TASK)
        return self._learn(job_id, *known, kind)

    @staticmethod
    def _label(name: str, known: frozenset[str] | None) -> str:
        return name if known is None or name in known or name == UNKNOWN_TASK else OTHER

    def _queue_label(self, queue: str) -> str:
        return queue if queue == UNKNOWN_QUEUE else self._label(queue, self.known_queues)

    def _forget(self, job_id: str) -> None:
        """After success or cancellation nothing more can happen to the job."""
        self._task_of.pop(job_id, None)

    def snapshot(self) -> MetricsSnapshot:
        """Reads in-memory state and the sources' ``statistics()``; no I/O. Call it inside the
        event loop: the default ``monotonic`` is ``anyio.current_time``."""
        tasks = {name: tally.freeze() for name, tally in self._tallies.items()}
        mono = self.monotonic()
        in_flight, utilisation = 0, 0.0
        if self.executor is not None:
            load = self.executor()
            in_flight = load.busy
            if load.capacity > 0:
                utilisation = min(1.0, max(0.0, load.busy / load.capacity))
        return MetricsSnapshot(
            at=self.now(),
            jobs_by_status=dict(self._by_status),
            tasks=tasks,
            totals=_sum(tasks.values()),
            throughput_1s=self._succeeded.rate_1s(mono),
            throughput_60s=self._succeeded.rate_60s(mono),
            failures_1s=self._failed.rate_1s(mono),
            failures_60s=self._failed.rate_60s(mono),
            queue_wait=self._queue_wait.snapshot(),
            run_time=self._run_time.snapshot(),
            end_to_end=self._end_to_end.snapshot(),
            in_flight=in_flight,
            executor_utilisation=utilisation,
            actor_restarts=dict(self.restarts()) if self.restarts is not None else {},
            actors={name: _as_dict(stats()) for name, stats in self.statistics_sources.items()},
            events_dropped=int(getattr(self.events, "dropped", 0)),
            workers=(workers := self._worker_views(mono)),
            workers_online=sum(w.online for w in workers.values()),
            outcomes=self._outcome_tree(),
            queue_depth=dict(self._depths),
            actors_running=tuple(self.running()) if self.running is not None else (),
            recent_failures=tuple(self._failures),
        )

    def _outcome_tree(self) -> dict[str, dict[str, dict[str, int]]]:
        tree: dict[str, dict[str, dict[str, int]]] = {}
        for (task, queue, kind), n in sorted(self._outcomes.items()):
            tree.setdefault(task, {}).setdefault(queue, {})[kind] = n
        return tree

    def _heard(self, beat: WorkerHeartbeat) -> None:
        previous = self._workers.get(beat.worker_id)
        throughput = 0.0
        if previous is not None:
            last, _, throughput = previous
            if beat.at > last.at and beat.finished >= last.finished:
                throughput = (beat.finished - last.finished) / (beat.at - last.at)
        self._workers[beat.worker_id] = (beat, self.monotonic(), throughput)

    def _worker_views(self, mono: float) -> dict[str, WorkerView]:
        return {
            worker_id: WorkerView(
                online=mono - seen <= OFFLINE_AFTER * beat.interval,
                last_seen=beat.at,
                queues=beat.queues,
                capacity=beat.capacity,
                busy=beat.busy,
                finished=beat.finished,
                throughput=throughput,
            )
            for worker_id, (beat, seen, throughput) in sorted(self._workers.items())
        }

    def statistics(self) -> MetricsStats:
        return MetricsStats(events_seen=self._events_seen, refresh_failures=self._refresh_failures)


def _status_counts(counts: Mapping[JobStatus, int]) -> dict[str, int]:
    return {status.value: counts.get(status, 0) for status in JobStatus}


def _elapsed(start: float, end: float) -> float:
    """Seconds from ``start`` to ``end``; never negative when clocks of two hosts disagree."""
    return max(0.0, end - start)
