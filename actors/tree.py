"""The whole supervisor tree on one screen: every stream, every child, in start order.

Start order is dependency order; the supervisor stops children in reverse, so a graceful
stop first closes intake (ingest), then stops taking deliveries (dispatcher), then lets the
executors drain within the grace period, then stops the retrier, DLQ keeper and metrics,
and the web edge last (it answers 503 while the rest drains).

    web edge (api) ──submit──▶ ingest ──group commit──▶ store ──JobMessage──▶ transport
    transport ──Delivery──▶ dispatcher ──claim, RunJob──▶ executor pool ──AttemptFailed──▶ retrier
                                                  │    └─after_attempt─▶ log shipper ─▶ log store
                                                  │                        │       └─DeadLetterJob─▶ dlq keeper
                                                  ▼                        ▼                           ▼
                         recorder (the one door): fenced store change ▶ ack / requeue ▶ events
                           complete, cancel, release       reschedule                 bury
    executor pool's in-flight registry: lease renewals, progress ──▶ store; CancelRequested ◀── bus
    reaper (periodic): expired leases, unpublished rows, retention ──▶ store, transport, logs
    heartbeat (periodic) ──WorkerHeartbeat──▶ event bus
    every actor ──public events──▶ event bus ──▶ metrics collector, waiters, cancel control
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from actors.dispatcher import Dispatcher
from actors.dlq import DlqKeeper
from actors.executor import ExecutorPool
from actors.heartbeat import Heartbeat
from actors.hub import EventHub
from actors.inflight import InFlight
from actors.ingest import Ingest
from actors.logship import LogShipper
from actors.metrics import MetricsCollector
from actors.persist import Retrying
from actors.reaper import Reaper
from actors.retrier import Retrier
from actors.settle import Recorder
from actors.slots import Slots
from actors.waiters import Waiters
from taskflow import limits
from taskflow.config import Settings
from taskflow.counting import CachedCounts
from taskflow.messages import TERMINAL_EVENTS, AttemptFailed, DeadLetterJob, RunJob
from taskflow.ports import Delivery
from taskflow.registry import TaskRegistry
from taskflow.resources import Resources
from taskflow.supervisor import ChildSpec, RestartPolicy, Supervisor

API, WORKER, PRODUCER = "api", "worker", "producer"
"""``producer``: ingest alone, in an application's own process (``taskflow.connect``)."""


class _NoDeliveries:
    """What an API-only process consumes: nothing (it never starts a dispatcher)."""

    async def receive(self) -> Delivery:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    def receive_nowait(self) -> Delivery:
        raise anyio.WouldBlock


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeConfig:
    concurrency: int = limits.CONCURRENCY
    prefetch: int | None = None
    """Deliveries the broker may push to this worker per queue; ``None``: the concurrency.
    More than that is taken ahead of the executors (claims still wait for a free slot)."""
    queues: Sequence[str] = ("default",)
    owner: str = "worker"
    lease: float = limits.LEASE_SECONDS
    shutdown_grace: float = limits.SHUTDOWN_GRACE_SECONDS
    promote_interval: float = limits.PROMOTE_INTERVAL_SECONDS
    reaper_interval: float = limits.REAPER_INTERVAL_SECONDS
    retention_completed: float = limits.RETENTION_COMPLETED
    retention_failed: float = limits.RETENTION_FAILED
    idempotency_ttl: float = limits.IDEMPOTENCY_TTL
    metrics_interval: float = 1.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    seed: int | None = None
    roles: frozenset[str] = frozenset({API, WORKER})
    """``api`` runs ingest, the metrics collector (cluster-wide: job events and worker
    heartbeats from every process) and the web edge; ``worker`` runs dispatcher, executors,
    retrier, DLQ keeper, reaper and heartbeat (its own metrics, published)."""
    heartbeat_interval: float = 2.0
    max_log_bytes: int = limits.MAX_LOG_BYTES
    """Per job; 0 turns job log capture off."""
    log_spool: Path | None = None
    """Where job log lines wait while the log store fails (``None``: they are lost)."""
    log_flush_interval: float = 2.0
    """How often the lines of running attempts are shipped (a tail from another process)."""
    stream_buffer: int = limits.STREAM_BUFFER
    """Events each live stream may fall behind by before it drops some (and is told)."""
    crash_after_commit: bool = False
    """Fault injection for the fault suite only (see ``Ingest.crash_after_commit``)."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        owner: str,
        roles: frozenset[str] = frozenset({API, WORKER}),
        crash_after_commit: bool = False,
    ) -> TreeConfig:
        """The tree of a service process: every knob from ``Settings`` (whose defaults are
        ``taskflow.limits``'), the owner name its leases carry, and its roles."""
        return cls(
            concurrency=settings.concurrency,
            prefetch=settings.prefetch,
            queues=settings.queues,
            owner=owner,
            lease=settings.lease_seconds,
            shutdown_grace=settings.shutdown_grace_seconds,
            promote_interval=settings.promote_interval_seconds,
            reaper_interval=settings.reaper_interval_seconds,
            retention_completed=settings.retention_completed,
            retention_failed=settings.retention_failed,
            idempotency_ttl=settings.idempotency_ttl,
            roles=roles,
            crash_after_commit=crash_after_commit,
            max_log_bytes=settings.max_log_bytes,
            log_spool=settings.home / "log-spool",
            stream_buffer=settings.stream_buffer,
        )


@dataclass(slots=True, kw_only=True)
class Tree:
    """Handles to the running actors (for the Runtime facade and the web layer)."""

    ingest: Ingest
    waiters: Waiters
    hub: EventHub
    """The process's job events for live streams (SSE, WebSocket, pages)."""
    dispatcher: Dispatcher
    pool: ExecutorPool
    retrier: Retrier
    dlq: DlqKeeper
    reaper: Reaper
    metrics: MetricsCollector
    logs: LogShipper
    retrying: Retrying
    """Calls stuck retrying an unavailable dependency (health turns ``degraded``)."""
    supervisor: Supervisor = field(init=False)
    force_stop: Callable[[], None] = field(init=False)
    """Cancel every actor now (a second Ctrl-C): running async attempts are released; sync
    tasks still in their threads are left claimed, and their leases bring them back."""


@asynccontextmanager
async def _closing(*owners: Ingest | LogShipper) -> AsyncIterator[None]:
    """Release the actors' own mailboxes once the tree has stopped."""
    try:
        yield
    finally:
        for owner in owners:
            owner.close()


EdgeChildren = Callable[[Tree], Sequence[ChildSpec]]
"""Children started before the core and stopped after it (the web server)."""


@asynccontextmanager
async def open_tree(
    registry: TaskRegistry, res: Resources, cfg: TreeConfig, *, edge: EdgeChildren | None = None
) -> AsyncIterator[Tree]:
    """Run the tree until the block exits; then stop it gracefully (reverse start order)."""
    runs_send, runs = anyio.create_memory_object_stream[RunJob](0)
    failures_send, failures = anyio.create_memory_object_stream[AttemptFailed](64)
    dead_send, dead = anyio.create_memory_object_stream[DeadLetterJob](64)
    async with (
        runs_send,
        runs,
        failures_send,
        failures,
        dead_send,
        dead,
        (
            res.transport.consume(cfg.queues, prefetch=cfg.prefetch or cfg.concurrency)
            if WORKER in cfg.roles
            else nullcontext(_NoDeliveries())
        ) as deliveries,
    ):
        retrying = Retrying()
        # The one recording door: every outcome (complete, cancel, reschedule, bury,
        # release) is stored, then acked or requeued, then published, through it.
        recorder = Recorder(
            store=res.store,
            transport=res.transport,
            events=res.events,
            clock=res.clock,
            retrying=retrying,
        )
        shipper = LogShipper(
            logs=res.logs,
            max_bytes=cfg.max_log_bytes,
            spool=cfg.log_spool,
            flush_interval=cfg.log_flush_interval,
            worker=cfg.owner,
            now=res.clock.now,
        )
        dlq = DlqKeeper(
            inbox=dead,
            recorder=recorder,
            store=res.store,
            queries=res.queries,
            transport=res.transport,
            events=res.events,
            clock=res.clock,
            logs=res.logs,
            notes=shipper.note,
            cache=res.cache,
        )
        retrier = Retrier(
            inbox=failures,
            dead=dead_send,
            recorder=recorder,
            store=res.store,
            queries=res.queries,
            transport=res.transport,
            events=res.events,
            registry=registry,
            clock=res.clock,
            rng=random.Random(cfg.seed),
            promote_interval=cfg.promote_interval,
            notes=shipper.note,
        )
        slots = Slots(capacity=cfg.concurrency)  # claims never outrun the free executors
        pool = ExecutorPool(
            runs=runs,
            failures=failures_send,
            registry=registry,
            recorder=recorder,
            inflight=InFlight(
                store=res.store, events=res.events, clock=res.clock, lease=cfg.lease, slots=slots
            ),
            events=res.events,
            clock=res.clock,
            before_attempt=[shipper.watch],
            after_attempt=[shipper.ship],
            concurrency=cfg.concurrency,
        )
        dispatcher = Dispatcher(
            deliveries=deliveries,
            queries=res.queries,
            runs=runs_send,
            owner=cfg.owner,
            lease=cfg.lease,
            slots=slots,
            store=res.store,
            transport=res.transport,
            clock=res.clock,
        )
        reaper = Reaper(
            events=res.events,
            logs=res.logs,
            notes=shipper.note,
            interval=cfg.reaper_interval,
            retention_completed=cfg.retention_completed,
            retention_failed=cfg.retention_failed,
            store=res.store,
            transport=res.transport,
            clock=res.clock,
            cache=res.cache,
        )
        ingest = Ingest(
            events=res.events,
            registry=registry,
            key_ttl=cfg.idempotency_ttl,
            crash_after_commit=cfg.crash_after_commit,
            store=res.store,
            transport=res.transport,
            clock=res.clock,
        )
        hub = EventHub(events=res.events, buffer=cfg.stream_buffer)
        counts = CachedCounts(queries=res.queries, cache=res.cache, ttl=cfg.metrics_interval)
        metrics = MetricsCollector(
            events=res.events,
            queries=res.queries,
            statistics_sources={
                "ingest": ingest.statistics,
                "dispatcher": dispatcher.statistics,
                "executor": pool.statistics,
                "retrier": retrier.statistics,
                "dlq": dlq.statistics,
                "reaper": reaper.statistics,
                "logs": shipper.statistics,
                **({"hub": hub.statistics} if API in cfg.roles else {}),
            },
            executor=pool.statistics,
            restarts=lambda: supervisor.statistics().restarts,
            running=lambda: supervisor.statistics().running,
            refresh_interval=cfg.metrics_interval,
            now=res.clock.now,
            known_tasks=frozenset(registry.names()),
            known_queues=frozenset(cfg.queues),
            queue_depths=lambda: res.transport.depths(cfg.queues),
            counts=counts.counts,
        )
        heartbeat = Heartbeat(
            events=res.events,
            clock=res.clock,
            worker_id=cfg.owner,
            queues=cfg.queues,
            executor=pool.statistics,
            interval=cfg.heartbeat_interval,
        )
        grace = cfg.shutdown_grace
        waiters = Waiters(events=res.events, kinds=TERMINAL_EVENTS)
        by_role = [
            # consumes: terminal job events; wakes the handle's wait() calls
            (ChildSpec(id="waiters", run=waiters.run), {API, PRODUCER}),
            # consumes: every public job event (one subscription); produces: each live
            # stream's bounded buffer (SSE, WebSocket). Stops late: streams follow the drain.
            (ChildSpec(id="hub", run=hub.run), {API}),
            # consumes: every event on the bus, each actor's statistics(); produces: snapshot()
            (ChildSpec(id="metrics", run=metrics.run), {API}),
            # consumes: DeadLetterJob (dead); produces, through the recorder: Bury + ack,
            # JobFailed (will_retry false) + JobDeadLettered; on request: replay ->
            # JobMessage, JobReplayed
            (ChildSpec(id="dlq", run=dlq.run), {WORKER}),
            # consumes: AttemptFailed (failures), JobSubmitted events; produces, through the
            # recorder: Reschedule + ack, JobFailed (will_retry) + JobScheduled; DeadLetterJob
            # (dead); promotes due jobs -> JobMessage
            (ChildSpec(id="retrier", run=retrier.run), {WORKER}),
            # consumes: ShipLines (after_attempt hook of the pool); produces: LogStore appends.
            # Started before the pool, so it stops after it and writes the last lines.
            (ChildSpec(id="logs", run=shipper.run, stop=shipper.stop), {WORKER}),
            # consumes: RunJob (runs), CancelRequested events (its in-flight registry);
            # produces: JobStarted, JobProgressed, lease renewals; through the recorder:
            # Complete/MarkCancelled + ack, JobSucceeded/JobCancelled; AttemptFailed
            # (failures); each outcome to the after_attempt hooks (the log shipper)
            (ChildSpec(id="executor", run=pool.run, stop=pool.stop, grace=grace), {WORKER}),
            # consumes: Delivery (transport); produces: fenced claims, RunJob (runs),
            # dead messages (poison -> the transport's dead letters)
            (
                ChildSpec(id="dispatcher", run=dispatcher.run, stop=dispatcher.stop, grace=grace),
                {WORKER},
            ),
            # periodic: expired leases -> requeue/bury + JobMessage; unpublished rows ->
            # JobMessage; retention purge (jobs, logs, keys)
            (ChildSpec(id="reaper", run=reaper.run), {WORKER}),
            # periodic: produces WorkerHeartbeat events (executor statistics)
            (ChildSpec(id="heartbeat", run=heartbeat.run), {WORKER}),
            # consumes: Submission (its own mailbox, through ingest.submit); produces: group
            # commits, JobMessage, JobSubmitted events
            (
                ChildSpec(id="ingest", run=ingest.run, stop=ingest.stop, grace=grace),
                {API, PRODUCER},
            ),
        ]
        children = [spec for spec, roles in by_role if roles & cfg.roles]
        tree = Tree(
            ingest=ingest,
            dispatcher=dispatcher,
            pool=pool,
            retrier=retrier,
            dlq=dlq,
            reaper=reaper,
            metrics=metrics,
            logs=shipper,
            retrying=retrying,
            waiters=waiters,
            hub=hub,
        )
        if edge:
            # First to start, last to stop: while the core drains, the web edge still answers
            # (503 ``shutting_down`` to submissions, 503 ``draining`` to health, reads as usual).
            children = [*edge(tree), *children]
        supervisor = tree.supervisor = Supervisor(children, policy=cfg.restart, name="taskflow")
        async with anyio.create_task_group() as tg, _closing(ingest, shipper):

            def force_stop() -> None:
                pool.force()
                tg.cancel_scope.cancel()

            tree.force_stop = force_stop
            await tg.start(supervisor.run)
            try:
                yield tree
            finally:
                with anyio.CancelScope(shield=True):
                    await supervisor.stop()
