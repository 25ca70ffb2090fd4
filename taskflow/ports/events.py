"""The EventBus port: fan-out of job events to every subscriber (metrics, waiters, streams)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from anyio.streams.memory import MemoryObjectReceiveStream

from taskflow.messages import Event


class EventBus(Protocol):
    async def publish(self, events: Sequence[Event]) -> None:
        """Never blocks on a slow subscriber: events are notifications; the store is the truth."""
        ...

    def subscribe(
        self, *, buffer: int = 256, kinds: Collection[type[Event]] | None = None
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[Event]]:
        """A bounded stream of the events published from now on: all of them, or only those
        of the given ``kinds`` (a broker then delivers nothing else to this process).
        Adapters bridge their transport into a memory stream, so consumers can drain what is
        ready at once."""
        ...
