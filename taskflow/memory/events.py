"""MemoryEventBus: in-process broadcast of events to every subscriber."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from taskflow.messages import Event


class MemoryEventBus:
    """Implements ``EventBus``. A subscriber whose buffer is full misses events (counted in
    ``dropped``) rather than slowing the publisher: events are notifications, the store is
    the truth."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[MemoryObjectSendStream[Event], tuple[type, ...] | None]] = []
        self.dropped = 0
        self.published = 0

    async def publish(self, events: Sequence[Event]) -> None:
        self.publish_nowait(events)
        await anyio.lowlevel.checkpoint()

    def publish_nowait(self, events: Sequence[Event]) -> None:
        for event in events:
            self.published += 1
            for send, kinds in self._subscribers:
                if kinds is not None and not isinstance(event, kinds):
                    continue
                try:
                    send.send_nowait(event)
                except anyio.WouldBlock:
                    self.dropped += 1
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass

    @asynccontextmanager
    async def subscribe(
        self, *, buffer: int = 256, kinds: Collection[type[Event]] | None = None
    ) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](buffer)
        entry = (send, None if kinds is None else tuple(kinds))
        self._subscribers.append(entry)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.remove(entry)
            send.close()
