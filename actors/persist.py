"""Calling the store and the transport from actors: outages are waited out, data errors never.

``persist`` retries a ``StoreError`` or ``TransportError`` (the dependency is unavailable)
with capped exponential backoff until it succeeds, while the work waits (backpressure); each
call stuck retrying is visible in a ``Retrying`` register, so health can say ``degraded``.
A ``NotStorable`` (the store refused a value) is never retried as it is: ``settle_isolated``
splits the batch until each refused change stands alone, so one bad outcome never holds up
its neighbours. Cancellation is never retried or swallowed.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from taskflow.backoff import Backoff
from taskflow.errors import NotStorable, StoreError, TransportError
from taskflow.jobs import Job
from taskflow.log import get_logger
from taskflow.ports import Change, JobStore

T = TypeVar("T")
log = get_logger("taskflow.persist")


@dataclass(frozen=True, slots=True)
class StuckCall:
    call: str
    retries: int
    error: str


@dataclass
class Retrying:
    """The calls retrying an unavailable dependency right now, one register per tree."""

    _calls: dict[int, StuckCall] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def begin(self) -> int:
        """A key for one call (``persist``), to report its failures under."""
        return next(self._ids)

    def failing(self, key: int, call: StuckCall) -> None:
        self._calls[key] = call

    def end(self, key: int) -> None:
        self._calls.pop(key, None)

    def stuck(self) -> list[StuckCall]:
        """Calls that failed at least twice in a row and are still retrying."""
        return [c for c in self._calls.values() if c.retries >= 2]


async def persist(
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    retrying: Retrying | None = None,
    base: float = 0.1,
    cap: float = 5.0,
) -> T:
    backoff = Backoff(base=base, cap=cap)
    register = retrying if retrying is not None else Retrying()
    key = register.begin()
    retries = 0
    try:
        while True:
            try:
                return await call()
            except (StoreError, TransportError) as exc:
                delay = backoff.delay(retries)
                retries += 1
                register.failing(key, StuckCall(call=what, retries=retries, error=exc.message))
                log.warning("dependency_unavailable", call=what, error=exc.message, retry_in=delay)
                await anyio.sleep(delay)
    finally:
        register.end(key)


async def settle_isolated(
    store: JobStore,
    changes: Sequence[Change],
    *,
    now: float,
    what: str,
    retrying: Retrying | None = None,
) -> list[Job | NotStorable | None]:
    """``store.settle(changes)`` through ``persist``; a batch the store refuses for a value is
    split in halves (each half is atomic, so nothing of a refused one was applied) until each
    refused change stands alone. Per change: the job it made, ``None`` (fenced out), or the
    ``NotStorable`` that refused it."""

    async def attempt(batch: Sequence[Change]) -> list[Job | NotStorable | None]:
        try:
            applied = await persist(what, lambda: store.settle(batch, now=now), retrying=retrying)
            return list(applied)
        except NotStorable as exc:
            if len(batch) == 1:
                log.error("change_not_storable", call=what, job_id=batch[0].job_id, error=str(exc))
                return [exc]
            mid = len(batch) // 2
            return await attempt(batch[:mid]) + await attempt(batch[mid:])

    return await attempt(changes) if changes else []
