"""The Transport port: moves job references from ingest to dispatchers, at least once."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from taskflow.messages import JobMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    tag: int
    body: bytes
    queue: str
    redelivered: bool = False


class Deliveries(Protocol):
    """A stream of deliveries; ``receive`` raises ``anyio.EndOfStream`` when consumption stops."""

    async def receive(self) -> Delivery: ...

    def receive_nowait(self) -> Delivery:
        """Raises ``anyio.WouldBlock`` when nothing is ready."""
        ...


class Transport(Protocol):
    async def publish(self, messages: Sequence[JobMessage]) -> None:
        """Publish and wait until the transport confirmed all of them (or raise)."""
        ...

    def consume(
        self, queues: Sequence[str], *, prefetch: int
    ) -> AbstractAsyncContextManager[Deliveries]:
        """At most ``prefetch`` unsettled deliveries; on exit, unsettled ones are requeued."""
        ...

    async def ack(self, tags: Sequence[int]) -> None: ...

    async def nack(self, tags: Sequence[int], *, requeue: bool) -> None:
        """``requeue=False`` sends the messages to the transport's dead-letter queue."""
        ...

    async def check(self) -> None:
        """Raise ``TransportError`` if the transport is not usable (readiness probe)."""
        ...

    async def depths(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages ready (not delivered) in each of ``queues``; ``TransportError`` if the
        transport cannot tell."""
        ...
