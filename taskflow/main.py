"""The composition root: opens the adapters, builds the actor tree, runs the service.

With the CLI (``taskflow/__main__.py``), the only modules of ``taskflow/`` that import
``actors/`` or ``web/`` (tests/unit/test_imports.py names them).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager

import anyio

from actors.outbox import publish_jobs
from actors.runtime import BlockingTaskFlow, EmbeddedTaskFlow, Runtime, open_runtime
from actors.tree import API, PRODUCER, WORKER, Tree, TreeConfig, open_tree
from taskflow import adapters, limits
from taskflow.clock import AnyioClock, Clock, WallClock
from taskflow.config import Secret, Settings
from taskflow.demo import demo_registry
from taskflow.errors import ConfigError
from taskflow.home import home_lock
from taskflow.jobs import JobStatus
from taskflow.log import get_logger
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryLogStore, MemoryTransport
from taskflow.ports import (
    JobQuery,
    JobStoreAndQueries,
)
from taskflow.registry import TaskRegistry
from taskflow.resources import Resources
from taskflow.supervisor import ChildSpec, RestartPolicy

log = get_logger("taskflow.main")

__all__ = [
    "BlockingTaskFlow",
    "EmbeddedTaskFlow",
    "Runtime",
    "connect",
    "connect_blocking",
    "embedded",
    "load_registry",
    "local_resources",
    "open_resources",
    "open_runtime",
    "recover_on_start",
    "serve",
]


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
        keys=adapters.key_store(store),
    )


@asynccontextmanager
async def embedded(
    registry: TaskRegistry,
    concurrency: int = 8,
    *,
    queues: Sequence[str] = ("default",),
    lease: float = limits.LEASE_SECONDS,
    shutdown_grace: float = 5.0,
    promote_interval: float = 0.25,
    restart: RestartPolicy | None = None,
    seed: int | None = None,
    prefetch: int | None = None,
) -> AsyncIterator[EmbeddedTaskFlow]:
    """Run the whole TaskFlow tree in this event loop (asyncio or trio), in memory.

    On exit the tree stops gracefully: intake closes, running jobs finish within
    ``shutdown_grace`` seconds, then the rest is cancelled.
    """
    store = MemoryJobStore()
    resources = local_resources(store, clock=AnyioClock())
    config = TreeConfig(
        concurrency=concurrency,
        prefetch=prefetch,
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


# ---------------------------------------------------------------- the Python producer


@asynccontextmanager
async def connect(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    amqp_url: str | None = None,
    registry: TaskRegistry | None = None,
) -> AsyncIterator[Runtime]:
    """Submit to a distributed TaskFlow from this process (asyncio; the drivers are
    asyncio-only): the ingest role runs here, on PostgreSQL and RabbitMQ.

    The handle is the one ``embedded()`` gives: ``submit`` returns after the durable commit
    (concurrent calls share group commits), ``wait`` listens on the event bus. Settings
    come from ``Settings.from_env()`` unless given; ``database_url``/``amqp_url`` override
    them. Tasks are validated and take their defaults from ``registry``, else from the
    ``TASKFLOW_TASKS`` modules (plus the demo tasks with ``TASKFLOW_DEMO=1``).
    """
    import sniffio

    if sniffio.current_async_library() != "asyncio":
        raise ConfigError("taskflow.connect runs on asyncio (psycopg and aiormq need it)")
    settings = settings or Settings.from_env()
    if database_url is not None:
        settings = dataclasses.replace(settings, database_url=Secret(database_url))
    if amqp_url is not None:
        settings = dataclasses.replace(settings, amqp_url=Secret(amqp_url))
    if not settings.database_url or not settings.amqp_url:
        raise ConfigError(
            "taskflow.connect needs TASKFLOW_DATABASE_URL and TASKFLOW_AMQP_URL (or "
            "database_url= and amqp_url=): a producer meets the workers on PostgreSQL and "
            "RabbitMQ; for one process, use taskflow.testing.embedded()"
        )
    if registry is None:
        registry = load_registry(settings.tasks, demo=bool(settings.demo))
    config = TreeConfig.from_settings(
        settings, owner=f"{socket.gethostname()}:{os.getpid()}", roles=frozenset({PRODUCER})
    )
    async with (
        open_resources(settings) as resources,
        open_runtime(registry, resources, config) as runtime,
    ):
        yield runtime


@contextmanager
def connect_blocking(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    amqp_url: str | None = None,
    registry: TaskRegistry | None = None,
) -> Iterator[BlockingTaskFlow]:
    """``connect`` for synchronous code: an event loop in a thread of its own runs the
    producer; every method blocks until done."""
    with anyio.from_thread.start_blocking_portal(backend="asyncio") as portal:
        producer = connect(
            settings, database_url=database_url, amqp_url=amqp_url, registry=registry
        )
        with portal.wrap_async_context_manager(producer) as runtime:
            yield BlockingTaskFlow(portal, runtime)


# ---------------------------------------------------------------- the service


def load_registry(modules: Sequence[str], *, demo: bool = False) -> TaskRegistry:
    """Every ``registry`` of the ``TASKFLOW_TASKS`` modules, plus the built-in demo tasks
    when ``demo`` (``taskflow up`` by default, ``--demo`` or ``TASKFLOW_DEMO=1`` elsewhere).

    Raises ``ConfigError`` for a module that cannot be imported or has no ``registry``, or
    that takes a demo task's name while the demo tasks are on (the message says so), and
    ``DuplicateTask`` when two modules define the same task name (never a silent override).
    """
    registry = demo_registry() if demo else TaskRegistry()
    builtins = set(registry.names())
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
        clash = sorted(set(found.names()) & builtins)
        if clash:
            raise ConfigError(
                f"TASKFLOW_TASKS: {name!r} defines {', '.join(map(repr, clash))}, the "
                "name of a built-in demo task (taskflow.demo: echo, sleep, fail, cpu); "
                "rename it, or run without the demo tasks (TASKFLOW_DEMO=0)"
            )
        registry.merge(found)
    return registry


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """The adapters for one process, each chosen from its URL's scheme
    (``taskflow.adapters``): PostgreSQL (embedded unless ``TASKFLOW_DATABASE_URL``), migrated
    under yoyo's lock; RabbitMQ for the transport and the event bus when
    ``TASKFLOW_AMQP_URL`` is set, else the in-memory ones; local log files."""
    open_store = adapters.opener(
        adapters.STORES, adapters.store_url(settings), "TASKFLOW_DATABASE_URL"
    )
    open_transport = adapters.opener(
        adapters.TRANSPORTS, adapters.transport_url(settings), "TASKFLOW_AMQP_URL"
    )
    open_logs = adapters.opener(adapters.LOG_STORES, adapters.log_url(settings), "job logs")
    async with (
        open_store(adapters.store_url(settings), settings) as store,
        open_transport(adapters.transport_url(settings), settings) as (transport, events),
        open_logs(adapters.log_url(settings), settings) as logs,
        adapters.open_cache(settings) as (cache, redis),
    ):
        yield Resources(
            store=store,
            queries=store,
            transport=transport,
            events=events,
            logs=logs,
            clock=WallClock(),
            keys=adapters.key_store(store),
            cache=cache,
            redis=redis,
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


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (``127.0.0.1``, ``::1``,
    ``localhost``); a wildcard (``0.0.0.0``, ``::``, empty) is not."""
    import ipaddress

    if not host or host in ("0.0.0.0", "::"):
        return False
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_exposure(settings: Settings) -> None:
    """``TASKFLOW_AUTH=off`` serves every route to whoever connects: only on loopback. Said
    before anything binds or starts."""
    if settings.auth == "off" and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to serve on {settings.host or 'every address'}:{settings.port} with "
            "TASKFLOW_AUTH=off: without API keys anyone who reaches the port could submit, "
            "replay and purge. Set TASKFLOW_AUTH=required (create a key with `taskflow keys "
            "create NAME --scopes admin`), or bind a loopback address (--host 127.0.0.1)",
            variable="TASKFLOW_AUTH",
        )


DASHBOARD_OPTION = "--dashboard-port or TASKFLOW_DASHBOARD_PORT"

ROLES = {"up": frozenset({API, WORKER}), "api": frozenset({API}), "worker": frozenset({WORKER})}


async def serve(settings: Settings, role: str = "up", *, dashboard: bool = False) -> None:
    """Run one process until SIGINT or SIGTERM: ``up`` (the whole tree plus the web server),
    ``api`` (web + ingest) or ``worker`` (dispatcher, executors, retrier, DLQ keeper, reaper,
    heartbeat).

    Before it changes anything, ``up`` takes its home (``HomeInUse`` if another process holds
    it) and every role with a web edge binds its port (``ConfigError`` if it is taken). The
    first signal drains: submissions get 503 ``shutting_down``, health 503 ``draining``, reads
    go on, running jobs finish within the grace period; the port closes last. A second signal
    cancels what still runs (released, not lost). With ``dashboard`` (``up --dashboard``) the
    dashboard's port must be free at start too; a ``taskflow dashboard`` process then serves
    it once the API does."""
    roles = ROLES[role]
    demo = settings.demo if settings.demo is not None else role == "up"
    registry = load_registry(settings.tasks, demo=demo)
    if not registry.names():
        log.warning("no_tasks_registered", hint="set TASKFLOW_TASKS, or TASKFLOW_DEMO=1")
    if role != "up" and not settings.amqp_url:
        raise ConfigError(f"taskflow {role} needs TASKFLOW_AMQP_URL (processes meet on RabbitMQ)")
    if API in roles:
        check_exposure(settings)
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
        sock = None
        if API in roles:  # a worker imports nothing of the web stack
            from web.server import listen

            sock = held.enter_context(listen(settings.host, settings.port))
            if dashboard:  # free now, or refuse before anything starts
                with listen(settings.host, settings.dashboard_port, option=DASHBOARD_OPTION):
                    pass
        metrics_sock = None
        if settings.metrics_port is not None:
            from actors.metrics_http import bind

            metrics_sock = held.enter_context(bind(settings.host, settings.metrics_port))

        def edge(tree: Tree) -> list[ChildSpec]:
            children = []
            if metrics_sock is not None:  # prometheus-client only when asked for
                from actors.exposition import WorkerCollector, registry_of
                from actors.metrics_http import MetricsServer

                collector = WorkerCollector(
                    executor=tree.pool.statistics,
                    sources=tree.metrics.statistics_sources,
                    restarts=lambda: tree.supervisor.statistics().restarts,
                )
                own = MetricsServer(sock=metrics_sock, registry=registry_of(collector))
                children.append(ChildSpec(id="metrics_http", run=own.run))
            if sock is None:
                return children
            from web.app import create_app
            from web.server import WebServer

            server = WebServer(
                app=create_app(Runtime(tree, resources), settings),
                host=settings.host,
                port=settings.port,
                sock=sock,
            )
            children.append(ChildSpec(id="web", run=server.run, stop=server.stop, grace=10.0))
            if dashboard:
                from web.dashboard_process import DashboardProcess
                from web.server import reachable

                panel = DashboardProcess(
                    api_url=f"http://{reachable(settings.host)}:{sock.getsockname()[1]}",
                    host=settings.host,
                    port=settings.dashboard_port,
                )
                children.append(ChildSpec(id="dashboard", run=panel.run))
            return children

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals)
            async with open_resources(settings) as resources:
                if isinstance(resources.transport, MemoryTransport):
                    await recover_on_start(resources)  # jobs of processes that are gone
                config = TreeConfig.from_settings(
                    settings,
                    owner=f"{socket.gethostname()}:{os.getpid()}",
                    roles=roles,
                    # Fault injection for the fault suite (tests/faults) only.
                    crash_after_commit=os.environ.get("TASKFLOW_TEST_CRASH_AFTER_COMMIT") == "1",
                )
                async with open_tree(registry, resources, config, edge=edge) as tree:
                    forced.append(tree)
                    if metrics_sock is not None:
                        host, port = metrics_sock.getsockname()[:2]
                        log.info("metrics_listening", host=host, port=port, path="/metrics")
                    if sock is not None:
                        host, port = sock.getsockname()[:2]
                        log.info("taskflow_started", role=role, host=host, port=port)
                    else:
                        log.info("taskflow_started", role=role, queues=",".join(config.queues))
                    await stop.wait()
            tg.cancel_scope.cancel()
