"""Which adapter serves each port, chosen from its URL's scheme (one table per port).

``TASKFLOW_DATABASE_URL``: ``postgresql://`` (or ``postgres://``), ``memory://`` (not durable:
for trials), unset: the embedded PostgreSQL under ``TASKFLOW_HOME``. ``TASKFLOW_AMQP_URL``:
``amqp://``/``amqps://`` (transport and event bus on RabbitMQ), unset or ``memory://``: in
process. Job logs: ``TASKFLOW_S3_URL`` (``http(s)://key:secret@host/bucket``: S3 or MinIO),
else ``file://`` (``TASKFLOW_HOME/logs``); ``memory://`` in tests. A scheme no table
knows is a ``ConfigError`` naming the ones it does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import anyio

from taskflow.config import Settings
from taskflow.errors import ConfigError
from taskflow.files import FileLogStore
from taskflow.log import get_logger
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryLogStore, MemoryTransport
from taskflow.memory.cache import MemoryCache
from taskflow.memory.keys import MemoryKeyStore
from taskflow.ports import EventBus, JobStoreAndQueries, LogStore, Transport
from taskflow.ports.cache import Cache
from taskflow.ports.keys import KeyStore

log = get_logger("taskflow.adapters")
T = TypeVar("T")
Opener = Callable[[str, Settings], AbstractAsyncContextManager[T]]


@asynccontextmanager
async def _postgres(url: str, settings: Settings) -> AsyncIterator[JobStoreAndQueries]:
    from taskflow.postgres import migrate, open_store, probe
    from taskflow.postgres.migrate import migration_ids

    # An unreachable server is one clear error, before the migrations; a schema that is up
    # to date costs one query (yoyo, its lock and its import only when something is pending).
    if not set(migration_ids()) <= await probe(url):
        applied = await anyio.to_thread.run_sync(migrate, url)
        if applied:
            log.info("migrations_applied", migrations=applied)
    async with open_store(url, probed=True) as store:
        yield store


@asynccontextmanager
async def _embedded_postgres(url: str, settings: Settings) -> AsyncIterator[JobStoreAndQueries]:
    from taskflow.postgres import open_embedded_server

    async with open_embedded_server(settings.home) as server, _postgres(server, settings) as s:
        yield s


@asynccontextmanager
async def _memory_store(url: str, settings: Settings) -> AsyncIterator[JobStoreAndQueries]:
    yield MemoryJobStore()


@asynccontextmanager
async def _rabbitmq(url: str, settings: Settings) -> AsyncIterator[tuple[Transport, EventBus]]:
    from taskflow.rabbitmq import open_rabbitmq_event_bus, open_rabbitmq_transport

    async with (
        open_rabbitmq_transport(
            url, queues=settings.queues, prefix=settings.amqp_prefix, quorum=settings.amqp_quorum
        ) as transport,
        open_rabbitmq_event_bus(url, prefix=settings.amqp_prefix) as events,
    ):
        yield transport, events


@asynccontextmanager
async def _in_process(url: str, settings: Settings) -> AsyncIterator[tuple[Transport, EventBus]]:
    yield MemoryTransport(), MemoryEventBus()


@asynccontextmanager
async def _file_logs(url: str, settings: Settings) -> AsyncIterator[LogStore]:
    path = urlsplit(url).path
    yield FileLogStore(Path(path) if path else settings.home / "logs")


@asynccontextmanager
async def _memory_logs(url: str, settings: Settings) -> AsyncIterator[LogStore]:
    yield MemoryLogStore()


STORES: Mapping[str, Opener[JobStoreAndQueries]] = {
    "postgresql": _postgres,
    "postgres": _postgres,
    "embedded": _embedded_postgres,
    "memory": _memory_store,
}
TRANSPORTS: Mapping[str, Opener[tuple[Transport, EventBus]]] = {
    "amqp": _rabbitmq,
    "amqps": _rabbitmq,
    "memory": _in_process,
}


@asynccontextmanager
async def _s3_logs(url: str, settings: Settings) -> AsyncIterator[LogStore]:
    from taskflow.s3 import open_s3_logs  # miniopy-async (the `s3` extra), asyncio only

    async with open_s3_logs(url) as store:
        yield store


LOG_STORES: Mapping[str, Opener[LogStore]] = {
    "file": _file_logs,
    "memory": _memory_logs,
    "http": _s3_logs,
    "https": _s3_logs,
}


def key_store(store: JobStoreAndQueries) -> KeyStore:
    """API keys beside the jobs: PostgreSQL's table on the same pool, else in memory."""
    from taskflow.postgres.store import PostgresJobStore

    if isinstance(store, PostgresJobStore):
        from taskflow.postgres.keys import PostgresKeyStore

        return PostgresKeyStore(store)
    return MemoryKeyStore()


@asynccontextmanager
async def open_cache(settings: Settings) -> AsyncIterator[tuple[Cache, object | None]]:
    """``(cache, redis link)``: Redis when ``TASKFLOW_REDIS_URL`` is set (reachable or not:
    calls fall back while it is down), else this process's memory (and no link)."""
    if not settings.redis_url:
        yield MemoryCache(), None
        return
    from taskflow.redislink import RedisCache, open_redis  # redis.asyncio: asyncio only

    async with open_redis(str(settings.redis_url), prefix=f"{settings.amqp_prefix}:") as link:
        yield RedisCache(link), link


def opener(table: Mapping[str, Opener[T]], url: str, setting: str) -> Opener[T]:
    """The adapter for ``url``'s scheme; ``ConfigError`` naming ``setting`` if none."""
    scheme = urlsplit(url).scheme.lower()
    try:
        return table[scheme]
    except KeyError:
        known = ", ".join(f"{s}://" for s in table if s != "embedded")
        raise ConfigError(
            f"{setting}: no adapter for {scheme or 'a URL without a scheme'}"
            f"{'://' if scheme else ''}; use one of {known}"
        ) from None


def store_url(settings: Settings) -> str:
    return str(settings.database_url) if settings.database_url else "embedded://"


def transport_url(settings: Settings) -> str:
    return str(settings.amqp_url) if settings.amqp_url else "memory://"


def log_url(settings: Settings) -> str:
    """``TASKFLOW_S3_URL`` (S3 or MinIO), else files under ``TASKFLOW_HOME/logs``."""
    return str(settings.s3_url) if settings.s3_url else "file://"
