"""The composition root: builds adapters and the actor tree, and the handle users call.

This is the one module in ``taskflow/`` that imports ``actors/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from typing import Any

import anyio
import msgspec

from actors.metrics import MetricsSnapshot
from actors.outbox import publish_jobs
from actors.tree import API, WORKER, Resources, Tree, TreeConfig, open_tree
from taskflow.clock import AnyioClock, Clock, WallClock
from taskflow.config import Settings
from taskflow.demo import demo_registry
from taskflow.errors import ConfigError, ValidationError
from taskflow.files import FileLogStore
from taskflow.home import home_lock
from taskflow.jobs import ACTIVE, TERMINAL, Job, JobStatus
from taskflow.log import get_logger
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryLogStore, MemoryTransport
from taskflow.messages import TERMINAL_EVENTS, CancelRequested, JobCancelled, NewJob, SubmitJobs
from taskflow.ports import (
    DeadMessage,
    EventBus,
    Inserted,
    JobQuery,
    JobStoreAndQueries,
    Transport,
)
from taskflow.registry import TaskRegistry
from taskflow.storable import find_unstorable
from taskflow.supervisor import ChildSpec, RestartPolicy

log = get_logger("taskflow.main")


def request_hash(jobs: Sequence[NewJob]) -> str:
    """A stable fingerprint of a submission, to tell a retried request from a different one.
    Raises ``ValidationError`` naming the field that cannot be encoded."""
    try:
        return hashlib.sha256(msgspec.json.encode(list(jobs), order="sorted")).hexdigest()
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        for i, job in enumerate(jobs):
            refused = find_unstorable(job.payload, f"jobs[{i}].payload")
            if refused is not None:
                raise ValidationError(
                    f"{refused.where} {refused.why}", fields={refused.where: refused.why}
                ) from exc
        raise ValidationError(f"the submission cannot be encoded: {exc}") from exc


class Runtime:
    """What callers use: submit, wait, cancel, replay, inspect. Shared by the embedding API
    and the web layer; all state lives in the store, the actors do the work."""

    def __init__(self, tree: Tree, resources: Resources) -> None:
        self.tree = tree
        self.resources = resources

    async def submit(
        self,
        task: str,
        payload: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
        delay: float = 0.0,
        idempotency_key: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> str:
        """Submit one job; returns its id once it is stored (and published if due)."""
        new = NewJob(
            task=task,
            payload=payload or {},
            queue=queue,
            priority=priority,
            delay=delay,
            max_attempts=max_attempts,
            timeout=timeout,
        )
        ids = await self.submit_many([new], idempotency_key=idempotency_key)
        return ids[0]

    async def submit_many(
        self, jobs: Sequence[NewJob], *, idempotency_key: str | None = None
    ) -> list[str]:
        inserted = await self.submit_batch(jobs, idempotency_key=idempotency_key)
        return list(inserted.job_ids)

    async def submit_batch(
        self, jobs: Sequence[NewJob], *, idempotency_key: str | None = None
    ) -> Inserted:
        """Submit a batch; ``Inserted.replayed`` says the key matched an earlier identical
        request (answered with its jobs, nothing new stored)."""
        command = SubmitJobs(
            jobs=tuple(jobs),
            idempotency_key=idempotency_key,
            request_hash=request_hash(jobs) if idempotency_key else None,
        )
        return await self.tree.ingest.submit(command)

    async def get(self, job_id: str) -> Job:
        """Raises ``JobNotFound``."""
        return await self.resources.queries.get(job_id)

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        return await self.resources.queries.list(query)

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it is terminal. Raises ``TimeoutError`` after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            kinds = [*TERMINAL_EVENTS]
            async with self.resources.events.subscribe(buffer=64, kinds=kinds) as events:
                while True:
                    job = await self.get(job_id)
                    if job.status in TERMINAL:
                        return job
                    # Wake on any event about this job; poll now and then in case one was missed.
                    with anyio.move_on_after(0.5):
                        async for event in events:
                            if getattr(event, "job_id", None) == job_id:
                                break

    async def wait_idle(self, timeout: float | None = None, poll: float = 0.01) -> None:
        """Return when no job is pending, scheduled or in progress, every outcome is stored,
        and the metrics snapshot has counted every event (seen idle on two polls in a row)."""
        with anyio.fail_after(timeout):
            calm = 0
            while calm < 2:
                await anyio.sleep(poll)
                calm = calm + 1 if await self._idle() else 0

    async def _idle(self) -> bool:
        counts = await self.resources.queries.counts()
        if any(counts.get(status, 0) for status in ACTIVE):
            return False
        return self.tree.pool.idle() and self.tree.metrics.backlog() == 0

    async def cancel(self, job_id: str) -> Job:
        """Cancel a pending or scheduled job at once; ask a running one to stop (its
        ``finally`` blocks run, then it is recorded ``cancelled``). Raises ``JobNotFound`` or
        ``InvalidTransition`` for a terminal job."""
        res = self.resources
        job = await res.store.cancel(job_id, now=res.clock.now())
        if job.status is JobStatus.IN_PROGRESS:
            await res.events.publish([CancelRequested(job_id=job_id)])
        else:
            await res.events.publish(
                [
                    JobCancelled(
                        job_id=job.id, task=job.task, attempt=job.attempts, at=res.clock.now()
                    )
                ]
            )
        return job

    async def replay(self, job_id: str) -> Job | None:
        """Replay one dead letter; ``None`` if the job is not a dead letter."""
        jobs = await self.tree.dlq.replay([job_id])
        return jobs[0] if jobs else None

    async def replay_all(self, *, task: str | None = None) -> int:
        return await self.tree.dlq.replay_all(task=task)

    async def dead_messages(self, *, limit: int = 50, offset: int = 0) -> list[DeadMessage]:
        """Transport messages dead-lettered because they named no job to run, with reasons."""
        return await self.resources.queries.dead_messages(limit=limit, offset=offset)

    async def dead_letter_list(self, *, limit: int = 50, offset: int = 0) -> list[Job]:
        return await self.tree.dlq.dead_letters(limit=limit, offset=offset)

    async def health(self, timeout: float = 2.0) -> dict[str, str]:
        """Probe every dependency: ``{"store": "ok" | reason, "transport": "ok" | reason}``."""
        res = self.resources
        probes = {"store": res.queries.check, "transport": res.transport.check}
        report: dict[str, str] = {}
        for name, probe in probes.items():
            try:
                with anyio.fail_after(timeout):
                    await probe()
            except Exception as exc:
                report[name] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                report[name] = "ok"
        return report

    @property
    def draining(self) -> bool:
        """Shutting down: submissions are refused while running jobs finish."""
        return self.tree.ingest.stopping

    def retrying(self) -> dict[str, str]:
        """Calls stuck retrying an unavailable dependency now: ``{call: last error}``."""
        return {c.call: f"{c.error} ({c.retries} tries)" for c in self.tree.retrying.stuck()}

    def metrics(self) -> MetricsSnapshot:
        """The metrics actor's latest snapshot."""
        return self.tree.metrics.snapshot()


class EmbeddedTaskFlow(Runtime):
    """The runtime on in-memory twins, with synchronous inspection helpers."""

    def __init__(self, tree: Tree, resources: Resources, store: MemoryJobStore) -> None:
        super().__init__(tree, resources)
        self.store = store

    def dead_letters(self) -> list[Job]:
        """Every dead-lettered job (status ``failed``, ``in_dlq`` true), oldest first."""
        return self.store.dead_letters()


@asynccontextmanager
async def open_runtime(
    registry: TaskRegistry, resources: Resources, config: TreeConfig
) -> AsyncIterator[Runtime]:
    """The tree on any adapters, with the handle callers use; stops gracefully on exit."""
    async with open_tree(registry, resources, config) as tree:
        yield Runtime(tree, resources)


def local_resources(store: JobStoreAndQueries, *, clock: Clock | None = None) -> Resources:
    """``store`` with the in-memory transport, event bus and log store: one process's tree
    (embedded, tests, ``taskflow up`` without RabbitMQ apart from the log files)."""
    return Resources(
        store=store,
        queries=store,
        transport=MemoryTransport(),
        events=MemoryEventBus(),
        logs=MemoryLogStore(),
        clock=clock or WallClock(),
    )


@asynccontextmanager
async def embedded(
    registry: TaskRegistry,
    concurrency: int = 8,
    *,
    queues: Sequence[str] = ("default",),
    lease: float = 15.0,
    shutdown_grace: float = 5.0,
    promote_interval: float = 0.25,
    restart: RestartPolicy | None = None,
    seed: int | None = None,
) -> AsyncIterator[EmbeddedTaskFlow]:
    """Run the whole TaskFlow tree in this event loop (asyncio or trio), in memory.

    On exit the tree stops gracefully: intake closes, running jobs finish within
    ``shutdown_grace`` seconds, then the rest is cancelled.
    """
    store = MemoryJobStore()
    resources = local_resources(store, clock=AnyioClock())
    config = TreeConfig(
        concurrency=concurrency,
        queues=tuple(queues),
        owner="embedded",
        lease=lease,
        shutdown_grace=shutdown_grace,
        promote_interval=promote_interval,
        restart=restart or RestartPolicy(),
        seed=seed,
    )
    async with open_runtime(registry, resources, config) as runtime:
        yield EmbeddedTaskFlow(runtime.tree, resources, store)


# ---------------------------------------------------------------- the service


def load_registry(modules: Sequence[str]) -> TaskRegistry:
    """The built-in demo tasks plus every ``registry`` of the ``TASKFLOW_TASKS`` modules.

    Raises ``ConfigError`` for a module that cannot be imported or has no ``registry``, and
    ``DuplicateTask`` when two define the same task name (never a silent override).
    """
    registry = demo_registry()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"TASKFLOW_TASKS: cannot import {name!r}: {exc}") from exc
        found = getattr(module, "registry", None)
        if not isinstance(found, TaskRegistry):
            raise ConfigError(
                f"TASKFLOW_TASKS: {name!r} has no module-level `registry = TaskRegistry()`"
            )
        registry.merge(found)
    return registry


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """The adapters for one process: PostgreSQL (embedded unless ``TASKFLOW_DATABASE_URL``),
    migrated under yoyo's lock; RabbitMQ for the transport and the event bus when
    ``TASKFLOW_AMQP_URL`` is set, else the in-memory ones; local log files."""
    from taskflow.postgres import migrate, open_embedded_server, open_store, probe

    async with AsyncExitStack() as stack:
        url: str = (
            str(settings.database_url)
            if settings.database_url
            else await stack.enter_async_context(open_embedded_server(settings.home))
        )
        await probe(url)  # an unreachable server is one clear error, before the migrations
        applied = await anyio.to_thread.run_sync(migrate, str(url))
        if applied:
            log.info("migrations_applied", migrations=applied)
        store = await stack.enter_async_context(open_store(str(url)))
        transport: Transport
        events: EventBus
        if settings.amqp_url:
            from taskflow.rabbitmq import open_rabbitmq_event_bus, open_rabbitmq_transport

            amqp = str(settings.amqp_url)
            transport = await stack.enter_async_context(
                open_rabbitmq_transport(
                    amqp,
                    queues=settings.queues,
                    prefix=settings.amqp_prefix,
                    quorum=settings.amqp_quorum,
                )
            )
            events = await stack.enter_async_context(
                open_rabbitmq_event_bus(amqp, prefix=settings.amqp_prefix)
            )
        else:
            transport, events = MemoryTransport(), MemoryEventBus()
        yield Resources(
            store=store,
            queries=store,
            transport=transport,
            events=events,
            logs=FileLogStore(settings.home / "logs"),
            clock=WallClock(),
        )


def gone_owners(owners: Sequence[str | None], *, host: str | None = None) -> list[str]:
    """The lease owners (``host:pid``) among ``owners`` that are processes of this host that no
    longer run: their jobs can be recovered at once. An owner on another host, or alive, is
    left to its lease."""
    import psutil

    here = host or socket.gethostname()
    gone = []
    for owner in set(owners):
        name, _, pid = (owner or "").rpartition(":")
        if name == here and pid.isdigit() and not psutil.pid_exists(int(pid)):
            gone.append(owner or "")
    return sorted(gone)


async def recover_on_start(res: Resources, *, batch: int = 1000) -> tuple[int, int]:
    """Start-up recovery of a process that owns its home and its in-memory transport: jobs
    left ``in_progress`` by a process that is gone (its lease expired, or its PID on this host
    no longer runs) are requeued, the lost attempt counted (dead-lettered when it was the
    last); a live process's jobs are never touched. Every ``pending`` job is published again
    (claims are fenced, so a job another process already runs is not run twice). Returns
    (recovered, published)."""
    running: list[str | None] = []
    before: tuple[float, str] | None = None
    while True:
        page = await res.queries.list(
            JobQuery(status=JobStatus.IN_PROGRESS, limit=batch, before=before)
        )
        if not page:
            break
        running += [j.lease_owner for j in page]
        before = (page[-1].created_at, page[-1].id)
    owners = gone_owners(running)
    recovered = 0
    while True:
        swept = await res.store.recover_expired(now=res.clock.now(), limit=batch, owners=owners)
        recovered += len(swept.requeued) + len(swept.buried)
        if len(swept.requeued) + len(swept.buried) < batch:
            break
    published = 0
    before = None
    while True:
        page = await res.queries.list(
            JobQuery(status=JobStatus.PENDING, limit=batch, before=before)
        )
        if not page:
            break
        await publish_jobs(res.transport, res.store, page)
        published += len(page)
        before = (page[-1].created_at, page[-1].id)
    if recovered or published:
        log.info("recovered_on_start", recovered=recovered, published=published)
    return recovered, published


def tree_config(settings: Settings) -> TreeConfig:
    return TreeConfig(
        concurrency=settings.concurrency,
        queues=settings.queues,
        owner=f"{socket.gethostname()}:{os.getpid()}",
        lease=settings.lease_seconds,
        shutdown_grace=settings.shutdown_grace_seconds,
        promote_interval=settings.promote_interval_seconds,
        reaper_interval=settings.reaper_interval_seconds,
        retention_completed=settings.retention_completed,
        retention_failed=settings.retention_failed,
        idempotency_ttl=settings.idempotency_ttl,
        # Fault injection for the fault suite (tests/faults) only: never set in production.
        crash_after_commit=os.environ.get("TASKFLOW_TEST_CRASH_AFTER_COMMIT") == "1",
    )


ROLES = {"up": frozenset({API, WORKER}), "api": frozenset({API}), "worker": frozenset({WORKER})}


async def serve(settings: Settings, role: str = "up") -> None:
    """Run one process until SIGINT or SIGTERM: ``up`` (the whole tree plus the web server),
    ``api`` (web + ingest) or ``worker`` (dispatcher, executors, retrier, DLQ keeper, reaper,
    heartbeat).

    Before it changes anything, ``up`` takes its home (``HomeInUse`` if another process holds
    it) and every role with a web edge binds its port (``ConfigError`` if it is taken). The
    first signal drains: submissions get 503 ``shutting_down``, health 503 ``draining``, reads
    go on, running jobs finish within the grace period; the port closes last. A second signal
    cancels what still runs (released, not lost)."""
    from web.app import create_app
    from web.server import WebServer, listen

    roles = ROLES[role]
    if role != "up" and not settings.amqp_url:
        raise ConfigError(f"taskflow {role} needs TASKFLOW_AMQP_URL (processes meet on RabbitMQ)")
    registry = load_registry(settings.tasks)
    stop = anyio.Event()
    forced: list[Tree] = []

    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if not stop.is_set():
                    log.info("shutdown_requested", signal=signal.Signals(signum).name)
                    stop.set()
                elif forced:
                    log.warning("shutdown_forced", signal=signal.Signals(signum).name)
                    forced[0].force_stop()
                    return

    with ExitStack() as held:
        if role == "up":
            held.enter_context(home_lock(settings.home))
        sock = held.enter_context(listen(settings.host, settings.port)) if API in roles else None

        def edge(tree: Tree) -> list[ChildSpec]:
            assert sock is not None
            server = WebServer(
                app=create_app(Runtime(tree, resources), settings),
                host=settings.host,
                port=settings.port,
                sock=sock,
            )
            return [ChildSpec(id="web", run=server.run, stop=server.stop, grace=10.0)]

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals)
            async with open_resources(settings) as resources:
                if isinstance(resources.transport, MemoryTransport):
                    await recover_on_start(resources)  # jobs of processes that are gone
                config = dataclasses.replace(tree_config(settings), roles=roles)
                async with open_tree(registry, resources, config, edge=edge) as tree:
                    forced.append(tree)
                    log.info("taskflow_started", role=role, host=settings.host, port=settings.port)
                    await stop.wait()
            tg.cancel_scope.cancel()
