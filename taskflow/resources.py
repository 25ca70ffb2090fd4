"""Resources: the adapters behind the ports for one process, opened before the tree and
closed after it."""

from __future__ import annotations

from dataclasses import dataclass

from taskflow.clock import Clock
from taskflow.ports import EventBus, JobQueries, JobStore, LogStore, Transport


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """The adapters behind the ports, opened before the tree and closed after it."""

    store: JobStore
    queries: JobQueries
    transport: Transport
    events: EventBus
    logs: LogStore
    clock: Clock
