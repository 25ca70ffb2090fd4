"""MemoryTransport: the in-memory twin of the Transport port.

Priority queues per queue name (higher priority first, FIFO within a priority), prefetch,
ack/nack, requeue of unsettled deliveries when a consumer leaves, and a dead-letter list.
No background tasks: consumers wait on a notifier that publishes and settlements wake.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from taskflow.codec import encode
from taskflow.errors import TransportError
from taskflow.messages import JobMessage
from taskflow.ports.transport import Delivery
from taskflow.streams import Notifier


@dataclass(order=True)
class _Entry:
    sort_key: tuple[int, int]
    queue: str = field(compare=False)
    body: bytes = field(compare=False)
    priority: int = field(compare=False)
    redelivered: bool = field(compare=False, default=False)


class _Consumer:
    def __init__(self, transport: MemoryTransport, queues: Sequence[str], prefetch: int) -> None:
        self._transport = transport
        self.queues = tuple(queues)
        self.prefetch = prefetch
        self.unsettled: dict[int, _Entry] = {}
        self.closed = False

    def receive_nowait(self) -> Delivery:
        if self.closed:
            raise anyio.EndOfStream
        if len(self.unsettled) >= self.prefetch:
            raise anyio.WouldBlock
        entry = self._transport._pop(self.queues)
        if entry is None:
            raise anyio.WouldBlock
        tag = next(self._transport._tags)
        self.unsettled[tag] = entry
        self._transport._owners[tag] = self
        return Delivery(tag=tag, body=entry.body, queue=entry.queue, redelivered=entry.redelivered)

    async def receive(self) -> Delivery:
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                await self._transport._changed.wait()


class MemoryTransport:
    """Implements ``Transport``. Inspection: ``depth()``, ``dead_lettered``, ``published``."""

    def __init__(self) -> None:
        self._queues: dict[str, list[_Entry]] = {}
        self._seq = itertools.count()
        self._tags = itertools.count(1)
        self._owners: dict[int, _Consumer] = {}
        self._changed = Notifier()
        self.dead_lettered: list[tuple[str, bytes]] = []
        self.published = 0
        self.outage: Exception | None = None
        """Fault injection: while set, ``publish`` and ``check`` fail as a broker outage would."""

    # ------------------------------------------------------------ port

    async def publish(self, messages: Sequence[JobMessage]) -> None:
        if self.outage is not None:
            raise TransportError(f"publish failed: {self.outage}") from self.outage
        for message in messages:
            self.publish_raw(message.queue, encode(message), priority=message.priority)
        await anyio.lowlevel.checkpoint()

    def publish_raw(self, queue: str, body: bytes, *, priority: int = 0) -> None:
        """Put any bytes on a queue (tests use it for poison messages)."""
        self._push(_Entry((-priority, next(self._seq)), queue, body, priority))
        self.published += 1

    @asynccontextmanager
    async def consume(self, queues: Sequence[str], *, prefetch: int) -> AsyncIterator[_Consumer]:
        if prefetch < 1:
            raise ValueError("prefetch must be >= 1")
        consumer = _Consumer(self, queues, prefetch)
        try:
            yield consumer
        finally:
            consumer.closed = True
            for tag, entry in consumer.unsettled.items():
                self._owners.pop(tag, None)
                entry.redelivered = True
                self._push(entry)
            consumer.unsettled.clear()

    async def ack(self, tags: Sequence[int]) -> None:
        self._settle(tags)
        await anyio.lowlevel.checkpoint()

    async def nack(self, tags: Sequence[int], *, requeue: bool) -> None:
        for entry in self._settle(tags):
            if requeue:
                entry.redelivered = True
                self._push(entry)
            else:
                self.dead_lettered.append((entry.queue, entry.body))
        await anyio.lowlevel.checkpoint()

    async def check(self) -> None:
        await anyio.lowlevel.checkpoint()
        if self.outage is not None:
            raise TransportError(f"transport unavailable: {self.outage}") from self.outage

    # ------------------------------------------------------------ inspection

    async def depths(self, queues: Sequence[str]) -> dict[str, int]:
        await anyio.lowlevel.checkpoint()
        return {name: self.depth(name) for name in queues}

    def depth(self, queue: str | None = None) -> int:
        if queue is not None:
            return len(self._queues.get(queue, ()))
        return sum(len(q) for q in self._queues.values())

    def unsettled(self) -> int:
        return len(self._owners)

    # ------------------------------------------------------------ internals

    def _push(self, entry: _Entry) -> None:
        heapq.heappush(self._queues.setdefault(entry.queue, []), entry)
        self._changed.notify()

    def _pop(self, queues: Sequence[str]) -> _Entry | None:
        best: list[_Entry] | None = None
        for name in queues:
            heap = self._queues.get(name)
            if heap and (best is None or heap[0] < best[0]):
                best = heap
        return heapq.heappop(best) if best else None

    def _settle(self, tags: Sequence[int]) -> list[_Entry]:
        settled = []
        for tag in tags:
            consumer = self._owners.pop(tag, None)
            if consumer is None:
                continue  # unknown or already settled: settling twice is harmless
            settled.append(consumer.unsettled.pop(tag))
        self._changed.notify()
        return settled
