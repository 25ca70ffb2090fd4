"""Taking what is ready from a stream in one go."""

from __future__ import annotations

from typing import Protocol, TypeVar

import anyio

T_co = TypeVar("T_co", covariant=True)


class Receiver(Protocol[T_co]):
    async def receive(self) -> T_co: ...

    def receive_nowait(self) -> T_co: ...


async def receive_batch(stream: Receiver[T_co], limit: int) -> list[T_co]:
    """Wait for one item, then take every item already waiting (up to ``limit``) without
    yielding to the scheduler: a consumer keeps up with producers that send in bursts, and
    one store call can serve the whole batch. Raises ``anyio.EndOfStream`` when the stream
    ends before the first item."""
    first = await stream.receive()
    return [first, *receive_ready(stream, limit - 1)]


def receive_ready(stream: Receiver[T_co], limit: int) -> list[T_co]:
    """Every item already waiting (up to ``limit``), without waiting for one."""
    batch: list[T_co] = []
    while len(batch) < limit:
        try:
            batch.append(stream.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return batch


class Notifier:
    """Wakes every task waiting on it; the event is made lazily, inside the loop (a
    condition without a lock, for "something changed, look again")."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()
