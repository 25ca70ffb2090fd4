"""Retrier: failed attempts -> scheduled again or -> the DLQ keeper; due jobs -> pending."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.attempt import public_failed
from actors.outbox import publish_jobs
from actors.settle import Entry, Recorder
from taskflow.clock import Clock
from taskflow.errors import NotStorable, StoreError, TransportError, UnknownTask
from taskflow.joblog import Notes
from taskflow.jobs import JobError
from taskflow.log import get_logger
from taskflow.messages import AttemptFailed, DeadLetterJob, JobScheduled, JobSubmitted
from taskflow.ports import EventBus, JobQueries, JobStore, Reschedule, Transport
from taskflow.registry import TaskRegistry
from taskflow.retry import GiveUp, RetryAfter, RetryPolicy
from taskflow.streams import receive_batch

log = get_logger("taskflow.retrier")


@dataclass(slots=True)
class RetrierStats:
    retried: int = 0
    given_up: int = 0
    promoted: int = 0
    stale: int = 0


@dataclass(kw_only=True)
class Retrier:
    """Decide what a failed attempt becomes, and promote scheduled jobs when they are due.

    Inputs: AttemptFailed (from the executor pool); JobSubmitted events wake the promoter
    early. Outputs: Reschedule + ack through ``recorder``, then JobFailed (``will_retry``) and
    JobScheduled events; DeadLetterJob to the DLQ keeper; JobMessages for promoted jobs.
    Restart: permanent. State: none; run_at lives in the store.
    """

    inbox: MemoryObjectReceiveStream[AttemptFailed]
    dead: MemoryObjectSendStream[DeadLetterJob]
    recorder: Recorder
    store: JobStore
    queries: JobQueries
    transport: Transport
    events: EventBus
    registry: TaskRegistry
    clock: Clock
    rng: random.Random = field(default_factory=random.Random)
    promote_interval: float = 1.0
    notes: Notes | None = None
    """Lifecycle lines for the job's log (retry scheduled in N s)."""
    promote_batch: int = 500
    _wake: anyio.Event | None = field(default=None, init=False)
    _counts: RetrierStats = field(default_factory=RetrierStats, init=False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self._watch)
            tg.start_soon(self._promote_loop)
            task_status.started()
            await self._handle_failures()
            tg.cancel_scope.cancel()

    def statistics(self) -> RetrierStats:
        return replace(self._counts)

    def wake(self) -> None:
        """Look for due jobs now (a job was scheduled earlier than the promoter's next check)."""
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------ failures

    async def _handle_failures(self) -> None:
        while True:
            try:
                batch = await receive_batch(self.inbox, 256)
            except anyio.EndOfStream:
                return
            await self._decide(batch)

    async def _decide(self, batch: list[AttemptFailed]) -> None:
        now = self.clock.now()
        retries: list[AttemptFailed] = []
        entries: list[Entry] = []
        for failure in batch:
            decision = self._policy(failure.task).decide(
                attempt=failure.attempt,
                error_types=failure.error_types,
                requested_delay=failure.retry_delay,
                max_attempts=failure.max_attempts,
                rng=self.rng,
            )
            if not failure.retryable:
                decision = GiveUp(code="non_retryable")
            match decision:
                case RetryAfter(delay=delay):
                    change = Reschedule(
                        job_id=failure.job_id,
                        attempt=failure.attempt,
                        run_at=now + delay,
                        error=failure.error,
                    )
                    scheduled = JobScheduled(
                        job_id=failure.job_id,
                        attempt=failure.attempt,
                        run_at=change.run_at,
                        at=now,
                        error=failure.error,
                    )
                    events = (public_failed(failure, will_retry=True), scheduled)
                    retries.append(failure)
                    entries.append(Entry(change, failure.delivery_tag, events))
                case GiveUp(code=code):
                    self._counts.given_up += 1
                    await self.dead.send(DeadLetterJob(failure=failure, code=code))
        if not entries:
            return
        applied = await self.recorder.record(entries, what="reschedule")
        for failure, job in zip(retries, applied, strict=True):
            if isinstance(job, NotStorable):  # its error was refused: bury it with one we wrote
                self._counts.given_up += 1
                error = JobError(code="error_not_storable", message="the error could not be stored")
                dead = DeadLetterJob(failure=replace(failure, error=error), code=error.code)
                await self.dead.send(dead)
            elif job is None:
                self._counts.stale += 1
                log.warning("stale_failure_dropped", job_id=failure.job_id, attempt=failure.attempt)
            else:
                self._counts.retried += 1
                if self.notes is not None and job.run_at is not None:
                    wait = max(0.0, job.run_at - self.clock.now())
                    message = f"retry scheduled in {wait:.1f} s (attempt {failure.attempt} of "
                    self.notes(job.id, failure.attempt, "warning", f"{message}{job.max_attempts})")
        self.wake()

    def _policy(self, task: str) -> RetryPolicy:
        try:
            return self.registry.get(task).policy
        except UnknownTask:
            return RetryPolicy()

    # ------------------------------------------------------------ promotion

    async def _watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self.events.subscribe(buffer=1024, kinds=[JobSubmitted]) as events:
            task_status.started()
            while True:
                batch = await receive_batch(events, 4096)
                if any(isinstance(e, JobSubmitted) and e.scheduled for e in batch):
                    self.wake()

    async def _promote_loop(self) -> None:
        while True:
            try:
                promoted = await self.promote_due()
            except (StoreError, TransportError) as exc:  # the jobs stay scheduled: next round
                log.warning("promotion_failed", error=exc.message)
                promoted = 0
            if promoted >= self.promote_batch:
                continue
            now = self.clock.now()
            try:
                next_at = await self.queries.next_run_at()
            except StoreError:
                next_at = None
            wait = self.promote_interval
            if next_at is not None:
                wait = max(0.0, min(wait, next_at - now))
            self._wake = anyio.Event()
            with anyio.move_on_after(wait):
                await self._wake.wait()

    async def promote_due(self) -> int:
        """Move due scheduled jobs to pending and publish them; returns how many."""
        jobs = await self.store.promote_due(now=self.clock.now(), limit=self.promote_batch)
        await publish_jobs(self.transport, self.store, jobs)
        self._counts.promoted += len(jobs)
        return len(jobs)
