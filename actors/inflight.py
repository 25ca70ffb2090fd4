"""The in-flight registry of an executor pool: what runs here, and the loops that tend it.

It holds every delivery the pool has taken until its outcome is recorded (so a stop knows
when the pool is idle), the attempts running now with their cancel scopes, and the latest
progress of each. Three loops tend them: lease renewal (at lease/3, one batch for all), the
progress writer (the latest report per job, every ``progress_interval``) and the cancel
listener (``CancelRequested`` on the event bus). The attempt lifecycle is ``actors.executor``.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from actors.slots import Slots
from taskflow import limits
from taskflow.clock import Clock
from taskflow.context import JobContext
from taskflow.errors import NotStorable, StoreError
from taskflow.jobs import Job
from taskflow.log import get_logger
from taskflow.messages import CancelRequested, JobProgressed
from taskflow.ports import EventBus, JobStore, Progress, Renew
from taskflow.storable import clean_text
from taskflow.streams import receive_batch

log = get_logger("taskflow.executor")

EARLY_CANCELS = 10_000
"""Cancels remembered for jobs not (yet) running here, newest kept."""


class StopReason(enum.Enum):
    """Why an attempt was stopped before its task returned (a timeout is its own outcome)."""

    CANCELLED = "cancelled"
    """A user cancelled the job: recorded ``cancelled``."""
    LEASE_LOST = "lease_lost"
    """The lease renewal found another attempt owns the job: this one's outcome is moot."""


@dataclass(kw_only=True)
class Running:
    """One attempt running here: stopping it cancels its scope and tells its context."""

    job: Job
    ctx: JobContext
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        self.reason = reason
        self.scope.cancel()
        self.ctx.cancel()


@dataclass(kw_only=True)
class InFlight:
    store: JobStore
    events: EventBus
    clock: Clock
    lease: float = limits.LEASE_SECONDS
    progress_interval: float = 0.25
    slots: Slots | None = None
    """Given back one by one as the outcomes of held deliveries are recorded."""
    _held: set[tuple[str, int]] = field(default_factory=set, init=False)
    _idle: anyio.Event | None = field(default=None, init=False)
    _running: dict[str, Running] = field(default_factory=dict, init=False)
    _cancel_early: dict[str, None] = field(default_factory=dict, init=False)
    _progress: dict[str, tuple[int, float, str | None]] = field(default_factory=dict, init=False)
    _progress_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Tend what runs here until cancelled."""
        async with anyio.create_task_group() as tg:
            await tg.start(self._listen_for_cancels)
            tg.start_soon(self._write_progress)
            tg.start_soon(self._renew_leases)
            task_status.started()

    # ------------------------------------------------------------ deliveries held

    def hold(self, job: Job) -> None:
        """The pool took ``job``'s delivery: it is held until its outcome is recorded."""
        self._held.add((job.id, job.attempts))

    def release(self, job_id: str, attempt: int) -> None:
        """The outcome of ``job_id``'s ``attempt`` is recorded (or left to its lease)."""
        key = (job_id, attempt)
        if key not in self._held:
            return
        self._held.remove(key)
        if self.slots is not None:
            self.slots.give()
        if not self._held and self._idle is not None:
            self._idle.set()

    def idle(self) -> bool:
        """Nothing held: every delivery taken has its outcome recorded."""
        return not self._held

    async def wait_idle(self) -> None:
        while self._held:
            self._idle = anyio.Event()
            await self._idle.wait()

    # ------------------------------------------------------------ running attempts

    def start(self, job: Job, ctx: JobContext) -> Running | None:
        """Register ``job``'s attempt as running; ``None`` if it was cancelled before it
        started (the task must not be called)."""
        if job.cancel_requested or job.id in self._cancel_early:
            self._cancel_early.pop(job.id, None)
            return None
        running = self._running[job.id] = Running(job=job, ctx=ctx)
        return running

    def finish(self, job_id: str) -> None:
        self._running.pop(job_id, None)

    def busy(self) -> int:
        return len(self._running)

    def cancel(self, job_id: str) -> bool:
        """Stop the running attempt of ``job_id`` here; remember it if it has not started."""
        running = self._running.get(job_id)
        if running is None:
            self._cancel_early[job_id] = None
            if len(self._cancel_early) > EARLY_CANCELS:
                del self._cancel_early[next(iter(self._cancel_early))]
            return False
        running.stop(StopReason.CANCELLED)
        return True

    # ------------------------------------------------------------ progress

    def on_progress(self, job_id: str, attempt: int, percent: float, message: str | None) -> None:
        """A task's ``ctx.progress`` (any thread): kept until the next write, latest wins."""
        message = None if message is None else clean_text(message)
        with self._progress_lock:
            self._progress[job_id] = (attempt, percent, message)

    async def _write_progress(self) -> None:
        while True:
            await anyio.sleep(self.progress_interval)
            with self._progress_lock:
                pending, self._progress = self._progress, {}
            if not pending:
                continue
            now = self.clock.now()
            items = list(pending.items())
            try:
                applied = await self.store.settle(
                    [Progress(job_id=j, attempt=a, percent=p, message=m) for j, (a, p, m) in items],
                    now=now,
                )
            except (StoreError, NotStorable) as exc:  # a hint: drop this round, keep running
                log.warning("progress_not_saved", jobs=len(items), error=exc.message)
                continue
            await self.events.publish(
                [
                    JobProgressed(job_id=j, attempt=a, percent=p, message=m, at=now)
                    for (j, (a, p, m)), job in zip(items, applied, strict=True)
                    if job is not None
                ]
            )

    # ------------------------------------------------------------ leases and cancels

    async def renew(self, job: Job) -> None:
        """Renew one lease now (a shutdown waiting for a sync task, the renewer gone); an
        outage is ignored: the next try is well inside the lease."""
        now = self.clock.now()
        try:
            renew = Renew(job_id=job.id, attempt=job.attempts, until=now + self.lease)
            await self.store.settle([renew], now=now)
        except StoreError as exc:
            log.warning("lease_renewal_failed", jobs=1, error=exc.message)

    async def _renew_leases(self) -> None:
        """Renew every lease in flight at lease/3; an attempt whose fence failed is stopped."""
        while True:
            await anyio.sleep(self.lease / 3)
            running = list(self._running.values())
            if not running:
                continue
            until = self.clock.now() + self.lease
            try:
                applied = await self.store.settle(
                    [Renew(job_id=r.job.id, attempt=r.job.attempts, until=until) for r in running],
                    now=self.clock.now(),
                )
            except StoreError as exc:  # try again next round, well inside the lease
                log.warning("lease_renewal_failed", jobs=len(running), error=exc.message)
                continue
            for r, job in zip(running, applied, strict=True):
                if job is not None and job.cancel_requested and r.reason is None:
                    # The CancelRequested event may have been missed (a full buffer, another
                    # process): the renewal reads the flag, so a cancel lands within lease/3.
                    self.cancel(job.id)
                if job is None and r.job.id in self._running and r.reason is None:
                    log.warning("lease_lost", job_id=r.job.id, attempt=r.job.attempts)
                    r.stop(StopReason.LEASE_LOST)

    async def _listen_for_cancels(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with self.events.subscribe(buffer=1024, kinds=[CancelRequested]) as events:
            task_status.started()
            while True:
                for event in await receive_batch(events, 4096):
                    if isinstance(event, CancelRequested):
                        self.cancel(event.job_id)
