"""Executor pool: the attempt lifecycle. Run claimed attempts under their timeouts, then hand
each outcome to be recorded: successes and cancels in batches through the recording door,
failures to the retrier. What runs here (leases, progress, cancels) is ``actors.inflight``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors import attempt
from actors.attempt import ThreadCall
from actors.inflight import InFlight, Running, StopReason
from actors.settle import Entry, Recorder, Settle
from taskflow import joblog
from taskflow.clock import Clock
from taskflow.context import JobContext
from taskflow.errors import NotStorable, Retry, StoreError, TransportError, UnknownTask
from taskflow.jobs import Job, JobError
from taskflow.log import get_logger
from taskflow.messages import (
    AttemptCancelled,
    AttemptFailed,
    AttemptFinished,
    AttemptSucceeded,
    JobStarted,
    RunJob,
)
from taskflow.ports import Complete, EventBus, MarkCancelled, Release
from taskflow.registry import TaskRegistry, TaskSpec, type_names
from taskflow.streams import receive_batch

log = get_logger("taskflow.executor")

AfterAttempt = Callable[[AttemptFinished], None]
"""A hook run after each attempt's outcome is recorded (see ``ExecutorPool.after_attempt``)."""

OUTCOME_BATCH = 256
"""Outcomes recorded in one store round trip, at most."""


@dataclass(slots=True)
class ExecutorStats:
    capacity: int = 0
    busy: int = 0
    started: int = 0
    finished: int = 0
    stale_outcomes: int = 0
    """Outcomes refused by the store's fence: the attempt had been taken over elsewhere."""
    released: int = 0


@dataclass(kw_only=True)
class ExecutorPool:
    """Run RunJobs: async tasks on the loop, sync tasks in worker threads.

    Inputs: RunJob (runs). Outputs: AttemptSucceeded and AttemptCancelled recorded through
    ``recorder`` (Complete/MarkCancelled + ack, then JobSucceeded/JobCancelled events);
    AttemptFailed to the retrier (failures), which records it; JobStarted events; each
    outcome to the ``after_attempt`` hooks. ``inflight`` tends what runs (leases, progress,
    cancels). Restart: permanent. State: the deliveries held, in ``inflight``.
    """

    runs: MemoryObjectReceiveStream[RunJob]
    failures: MemoryObjectSendStream[AttemptFailed]
    registry: TaskRegistry
    recorder: Recorder
    inflight: InFlight
    events: EventBus
    clock: Clock
    before_attempt: Sequence[Callable[[JobContext], None]] = ()
    """Called with each attempt's context before its task runs (the log shipper watches its
    log). Synchronous and quick; exceptions are logged."""
    after_attempt: Sequence[AfterAttempt] = ()
    """Called with each outcome once it is recorded (or handed to the retrier): log shipping,
    and later Prometheus and tracing. Synchronous and quick; exceptions are logged."""
    concurrency: int = 8
    _forced: bool = field(default=False, init=False)
    _shields: set[anyio.CancelScope] = field(default_factory=set, init=False)
    _stop: anyio.Event | None = field(default=None, init=False)
    _counts: ExecutorStats = field(default_factory=ExecutorStats, init=False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop = anyio.Event()
        limiter = anyio.CapacityLimiter(self.concurrency)
        send, receive = anyio.create_memory_object_stream[AttemptFinished](self.concurrency)
        async with anyio.create_task_group() as tg, send, receive:
            await tg.start(self.inflight.run)
            for _ in range(self.concurrency):
                tg.start_soon(self._executor, send.clone(), limiter)
            tg.start_soon(self._write_outcomes, receive.clone())
            task_status.started()
            await self._stop.wait()
            await self.inflight.wait_idle()
            tg.cancel_scope.cancel()

    async def stop(self) -> None:
        """Take no new work; ``run`` returns once every attempt in flight is recorded."""
        if self._stop is not None:
            self._stop.set()

    def force(self) -> None:
        """A forced stop (second signal): do not wait for sync tasks still in their threads;
        their jobs stay claimed and their leases bring them back (``worker_lost``)."""
        self._forced = True
        for scope in list(self._shields):
            scope.cancel()

    def cancel(self, job_id: str) -> bool:
        """Cancel the running attempt of ``job_id`` here; remember it if it has not started."""
        return self.inflight.cancel(job_id)

    def idle(self) -> bool:
        """No attempt in flight here: every outcome received has been recorded."""
        return self.inflight.idle()

    def statistics(self) -> ExecutorStats:
        return replace(self._counts, capacity=self.concurrency, busy=self.inflight.busy())

    @contextlib.contextmanager
    def _unless_forced(self) -> Iterator[None]:
        """Shielded from the pool's cancellation (what is done gets recorded, even past the
        grace, waiting out a dependency outage), but not from ``force()``."""
        with anyio.CancelScope(shield=True) as scope:
            if self._forced:
                scope.cancel()
            self._shields.add(scope)
            try:
                yield
            finally:
                self._shields.discard(scope)

    # ------------------------------------------------------------ the lifecycle

    async def _executor(
        self, outcomes: MemoryObjectSendStream[AttemptFinished], limiter: anyio.CapacityLimiter
    ) -> None:
        async with outcomes:
            while True:
                if self._stop is not None and self._stop.is_set():
                    await anyio.sleep_forever()
                try:
                    run = await self.runs.receive()
                except anyio.EndOfStream:
                    return
                self.inflight.hold(run.job)
                if self._stop is not None and self._stop.is_set():
                    # Stopping: take no new work; give the job back without burning the attempt.
                    with self._unless_forced():
                        await self._release(run)
                    continue
                call = ThreadCall()
                try:
                    outcome = await self._execute(run, limiter, call)
                except anyio.get_cancelled_exc_class():
                    with self._unless_forced():
                        await self._record_cut(run, call)
                    raise
                try:
                    await outcomes.send(outcome)
                except anyio.get_cancelled_exc_class():
                    with self._unless_forced():
                        await self._record([outcome], stopping=True)
                    raise

    async def _execute(
        self, run: RunJob, limiter: anyio.CapacityLimiter, call: ThreadCall
    ) -> AttemptFinished:
        job = run.job
        started = self.clock.now()
        self._counts.started += 1
        queued_at = job.run_at or job.created_at
        await self.events.publish(
            [
                JobStarted(
                    job_id=job.id,
                    task=job.task,
                    attempt=job.attempts,
                    at=started,
                    queued_at=queued_at,
                    queue=job.queue,
                )
            ]
        )
        ctx = JobContext(
            job_id=job.id,
            attempt=job.attempts,
            task=job.task,
            queue=job.queue,
            _sink=self.inflight.on_progress,
            _log_empty=job.attempts == 1 and not job.history and not job.replay_count,
        )
        try:
            spec = self.registry.get(job.task)
        except UnknownTask as exc:
            error = JobError(code=exc.code, message=exc.message)
            return attempt.failed(
                run, started=started, at=self.clock.now(), error=error, retryable=False
            )
        running = self.inflight.start(job, ctx)
        if running is None:  # cancelled before it started: the task is never called
            return attempt.cancelled(run, at=self.clock.now(), lines=())
        for hook in self.before_attempt:
            try:
                hook(ctx)
            except Exception as exc:  # a hook never stops the attempt
                log.error("before_attempt_hook_failed", hook=repr(hook), error=repr(exc))
        try:
            return await self._attempt(run, spec, running, limiter, call, started)
        finally:
            ctx.cancel()
            self.inflight.finish(job.id)

    async def _attempt(
        self,
        run: RunJob,
        spec: TaskSpec,
        running: Running,
        limiter: anyio.CapacityLimiter,
        call: ThreadCall,
        started: float,
    ) -> AttemptFinished:
        job, ctx = run.job, running.ctx

        def failed(error: JobError, **kw: Any) -> AttemptFailed:
            lines = tuple(ctx.log_lines())
            return attempt.failed(
                run, started=started, at=self.clock.now(), error=error, lines=lines, **kw
            )

        result: Any = None
        scope = running.scope
        if job.timeout:  # one scope for both: ``running.reason`` tells a stop from a timeout
            scope.deadline = anyio.current_time() + job.timeout
        try:
            with scope:
                result = await self._call(spec, job, ctx, limiter, call, started)
        except Retry as exc:
            return failed(attempt.error_of("retry_requested", exc), retry_delay=exc.delay)
        except Exception as exc:
            return failed(attempt.error_of("task_error", exc), error_types=type_names(type(exc)))
        if running.reason is StopReason.LEASE_LOST:
            message = "the lease expired; another attempt owns the job"
            return failed(JobError(code="lease_lost", message=message))
        lines = tuple(ctx.log_lines())
        if running.reason is StopReason.CANCELLED:
            return attempt.cancelled(run, at=self.clock.now(), lines=lines)
        if scope.cancelled_caught:  # not stopped by anyone (above): its deadline passed
            message = f"the attempt ran longer than its timeout of {job.timeout} s"
            return failed(JobError(code="timeout", message=message))
        return attempt.succeeded(
            run, started=started, at=self.clock.now(), result=result, lines=lines
        )

    async def _call(
        self,
        spec: TaskSpec,
        job: Job,
        ctx: JobContext,
        limiter: anyio.CapacityLimiter,
        call: ThreadCall,
        started: float,
    ) -> Any:
        # stdlib logging inside the task reaches the job's log (joblog.TaskLogHandler); the
        # worker thread of a ``def`` task inherits the context variable.
        token = joblog.CURRENT.set(ctx.journal)
        try:
            if spec.is_async:
                return await spec.fn(job.payload, ctx)
            # Abandoned on cancel: a timeout or a cancel records its outcome at once (the
            # thread finishes on its own; ``ctx.cancelled`` tells it to stop). A shutdown
            # waits for it instead (``_record_cut``).
            call.threaded, call.started = True, started
            return await anyio.to_thread.run_sync(
                call.run, spec.fn, job.payload, ctx, limiter=limiter, abandon_on_cancel=True
            )
        finally:
            joblog.CURRENT.reset(token)

    async def _record_cut(self, run: RunJob, call: ThreadCall) -> None:
        """The pool was cancelled (shutdown past its grace) while ``run`` ran.

        An async task has stopped: give the job back without burning the attempt. A sync
        task's thread cannot be stopped: wait for it and record what it returned, so the job
        does not run again under the same attempt; a failure it raised (``ctx.cancelled`` seen)
        gives the job back. If forced, leave the job claimed: its lease brings it back."""
        job = run.job
        if call.threaded and not call.done.is_set():
            log.warning("waiting_for_sync_task", job_id=job.id, attempt=job.attempts)
            try:
                # Wait for the thread in a thread (no polling), renewing the lease every
                # lease/3 ourselves: the renewer has stopped with the rest of the pool.
                while not await anyio.to_thread.run_sync(
                    call.done.wait, self.inflight.lease / 3, abandon_on_cancel=True
                ):
                    await self.inflight.renew(job)
            except anyio.get_cancelled_exc_class():
                log.warning("sync_task_left_to_its_lease", job_id=job.id)  # forced
                raise
        if call.threaded and call.error is None:
            lines = tuple(call.ctx.log_lines()) if call.ctx else ()
            outcome = attempt.succeeded(
                run, started=call.started, at=self.clock.now(), result=call.result, lines=lines
            )
            await self._record([outcome], stopping=True)
        else:
            await self._release(run)

    # ------------------------------------------------------------ recording

    async def _write_outcomes(self, outcomes: MemoryObjectReceiveStream[AttemptFinished]) -> None:
        async with outcomes:
            while True:
                try:
                    batch = await receive_batch(outcomes, OUTCOME_BATCH)
                except anyio.EndOfStream:
                    return
                except anyio.get_cancelled_exc_class():
                    # Cancelled with outcomes still buffered: record them, or give them back.
                    with self._unless_forced():
                        left: list[AttemptFinished] = []
                        while True:
                            try:
                                left.append(outcomes.receive_nowait())
                            except (anyio.WouldBlock, anyio.EndOfStream):
                                break
                        await self._record(left, stopping=True)
                    raise
                with self._unless_forced():  # a batch taken is recorded, even past the grace
                    await self._record(batch)

    async def _record(self, batch: Sequence[AttemptFinished], *, stopping: bool = False) -> None:
        """Record a batch of outcomes: successes and cancels through the door, failures to the
        retrier. ``stopping`` (the pool is being cancelled, the retrier may be gone): a failure
        gives its job back instead, so no attempt is burned by the shutdown."""
        settled: list[AttemptSucceeded | AttemptCancelled] = []
        failed: list[AttemptFailed] = []
        for outcome in batch:
            if isinstance(outcome, AttemptFailed):
                failed.append(outcome)
            else:
                settled.append(outcome)
        applied = await self.recorder.record([_entry(o) for o in settled], what="settle")
        kept: list[AttemptFinished] = []
        for o, job in zip(settled, applied, strict=True):
            if job is None:
                log.warning("stale_outcome_dropped", job_id=o.job_id, attempt=o.attempt)
                self._counts.stale_outcomes += 1
            if not isinstance(job, NotStorable):
                kept.append(o)
            elif isinstance(o, AttemptSucceeded):
                # A refused result fails its job for good (the retrier buries it and acks its
                # delivery); a refused cancel is left to its lease. Neither holds up the rest.
                failed.append(attempt.not_storable(o, job))
        self._after_attempt(kept)
        if stopping:
            for f in failed:
                await self._release(f)
            failed = []
        for f in failed:
            await self.failures.send(f)
        self._after_attempt(failed)
        self._counts.finished += len(kept) + len(failed)
        for done in batch:
            self.inflight.release(done.job_id, done.attempt)

    async def _release(self, run: RunJob | AttemptFailed) -> None:
        """Give the job back without burning the attempt (a shutdown cut it, or it failed
        while the retrier may be gone). One try: if the store or the transport cannot be
        reached, the job's lease brings it back."""
        if isinstance(run, RunJob):
            job_id, attempt_no, tag = run.job.id, run.job.attempts, run.delivery_tag
        else:
            job_id, attempt_no, tag = run.job_id, run.attempt, run.delivery_tag
        try:
            await self.recorder.record(
                [Entry(Release(job_id=job_id, attempt=attempt_no), tag)],
                what="release",
                settle=Settle.REQUEUE,
                patient=False,
            )
        except (StoreError, TransportError) as exc:
            log.warning("release_failed", job_id=job_id, error=exc.message)
        else:
            self._counts.released += 1
        finally:
            self.inflight.release(job_id, attempt_no)

    def _after_attempt(self, outcomes: Sequence[AttemptFinished]) -> None:
        """Run every ``after_attempt`` hook on each recorded outcome; a hook that raises is
        logged and never stops the outcome path."""
        for hook in self.after_attempt:
            for outcome in outcomes:
                try:
                    hook(outcome)
                except Exception as exc:
                    log.error("after_attempt_hook_failed", hook=repr(hook), error=repr(exc))


def _entry(outcome: AttemptSucceeded | AttemptCancelled) -> Entry:
    if isinstance(outcome, AttemptSucceeded):
        change = Complete(job_id=outcome.job_id, attempt=outcome.attempt, result=outcome.result)
        return Entry(change, outcome.delivery_tag, (attempt.public_succeeded(outcome),))
    cancel = MarkCancelled(job_id=outcome.job_id, attempt=outcome.attempt)
    return Entry(cancel, outcome.delivery_tag, (attempt.public_cancelled(outcome),))
