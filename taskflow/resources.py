"""Resources: the adapters behind the ports for one process, opened before the tree and
closed after it."""

from __future__ import annotations

from dataclasses import dataclass, field

from taskflow.clock import Clock
from taskflow.memory.cache import MemoryCache
from taskflow.memory.keys import MemoryKeyStore
from taskflow.ports import EventBus, JobQueries, JobStore, LogStore, Transport
from taskflow.ports.cache import Cache
from taskflow.ports.keys import KeyStore


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """The adapters behind the ports, opened before the tree and closed after it."""

    store: JobStore
    queries: JobQueries
    transport: Transport
    events: EventBus
    logs: LogStore
    clock: Clock
    keys: KeyStore = field(default_factory=MemoryKeyStore)
    """API keys: PostgreSQL's table beside the jobs, else in memory."""
    cache: Cache = field(default_factory=MemoryCache)
    """Redis (``TASKFLOW_REDIS_URL``: shared by every process), else this process's."""
    redis: object | None = None
    """The ``RedisLink`` behind the cache, for the API's rate limits (``None``: no Redis)."""
