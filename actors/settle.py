"""The one recording door: every outcome of an attempt is recorded through ``Recorder.record``.

Complete, cancel, reschedule, bury and release are the same three steps, for a whole batch:

1. the fenced store change (``settle_isolated``: an outage is waited out, a value the store
   refuses is isolated so it never holds up its neighbours);
2. then the deliveries settled: acked, or given back to the queue (``Settle.REQUEUE``);
3. then the events of what applied published.

A change fenced out (another attempt owns the job now) still settles its delivery, since the
message is spent, but publishes nothing. A refused change (``NotStorable``) leaves its delivery
unsettled: the caller decides what the job becomes (the executor fails it, the retrier and the
DLQ keeper bury it with an error they wrote), and if nothing can be stored, its lease brings it
back. The executor, the retrier and the DLQ keeper all record through here; a shutdown is a
parameter (``patient=False``), not another copy.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from actors.persist import Retrying, persist, settle_isolated
from taskflow.clock import Clock
from taskflow.errors import NotStorable
from taskflow.jobs import Job
from taskflow.messages import Event
from taskflow.ports import Change, EventBus, JobStore, Transport

Applied = Job | NotStorable | None
"""Per change: the job it made, ``None`` (fenced out), or the ``NotStorable`` that refused it."""


class Settle(enum.Enum):
    """What becomes of the deliveries once their changes are stored."""

    ACK = "ack"
    """The delivery is done with (completed, cancelled, rescheduled, buried, or fenced out)."""
    REQUEUE = "requeue"
    """Give the message back to its queue (a release: the attempt is not burned)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One outcome to record: the store change, the delivery it settles (``None``: there is
    none, e.g. a replay), and the events to publish if the change applied."""

    change: Change
    delivery_tag: int | None
    events: tuple[Event, ...] = ()


@dataclass(kw_only=True)
class Recorder:
    """The door itself; one per tree, shared by the actors that record outcomes."""

    store: JobStore
    transport: Transport
    events: EventBus
    clock: Clock
    retrying: Retrying = field(default_factory=Retrying)

    async def record(
        self,
        entries: Sequence[Entry],
        *,
        what: str,
        settle: Settle = Settle.ACK,
        patient: bool = True,
    ) -> list[Applied]:
        """Store every change (one fenced batch), settle the deliveries, publish the events of
        what applied; returns what each change did, in order.

        ``patient`` (the normal case): an unavailable store or transport is retried until it
        answers, while the work waits. ``patient=False`` (a shutdown): one try; a
        ``StoreError`` or ``TransportError`` is raised and the caller leaves the jobs to their
        leases."""
        if not entries:
            return []
        now = self.clock.now()
        changes = [e.change for e in entries]
        if patient:
            applied = await settle_isolated(
                self.store, changes, now=now, what=what, retrying=self.retrying
            )
        else:
            applied = list(await self.store.settle(changes, now=now))
        tags = [
            e.delivery_tag
            for e, job in zip(entries, applied, strict=True)
            if e.delivery_tag is not None and not isinstance(job, NotStorable)
        ]
        if tags:
            if settle is Settle.REQUEUE:
                await self._call("nack", lambda: self.transport.nack(tags, requeue=True), patient)
            else:
                await self._call("ack", lambda: self.transport.ack(tags), patient)
        published = [
            event
            for e, job in zip(entries, applied, strict=True)
            if isinstance(job, Job)
            for event in e.events
        ]
        if published:
            await self.events.publish(published)
        return applied

    async def _call(self, what: str, call: Callable[[], Awaitable[None]], patient: bool) -> None:
        if patient:
            await persist(what, call, retrying=self.retrying)
        else:
            await call()
