"""Executor pool: run claimed attempts under their timeouts, store outcomes in batches."""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.persist import Retrying, persist, settle_isolated
from taskflow import limits
from taskflow.clock import Clock
from taskflow.codec import encode_value
from taskflow.context import JobContext
from taskflow.errors import NotStorable, Retry, StoreError, TransportError, UnknownTask
from taskflow.jobs import Job, JobError
from taskflow.log import get_logger
from taskflow.messages import (
    CancelRequested,
    JobCancelled,
    JobFailed,
    JobProgressed,
    JobStarted,
    JobSucceeded,
    Outcome,
    RunJob,
)
from taskflow.ports import (
    Complete,
    EventBus,
    JobStore,
    MarkCancelled,
    Progress,
    Release,
    Renew,
    Transport,
)
from taskflow.registry import TaskRegistry, TaskSpec, type_names
from taskflow.storable import clean_text, find_unstorable_result
from taskflow.streams import receive_batch

log = get_logger("taskflow.executor")

AfterAttempt = Callable[[Outcome], None]
"""A hook run after each attempt's outcome is recorded (see ``ExecutorPool.after_attempt``)."""


@dataclass(slots=True)
class ExecutorStats:
    capacity: int = 0
    busy: int = 0
    started: int = 0
    finished: int = 0
    stale_outcomes: int = 0
    """Outcomes refused by the store's fence: the attempt had been taken over elsewhere."""
    released: int = 0


@dataclass
class _ThreadCall:
    """A sync task's run in its worker thread, observable after the awaiting task was cut:
    a thread cannot be cancelled, so a shutdown waits for it instead of giving the job back
    while it still runs (which would run the job twice under one attempt number)."""

    threaded: bool = False
    started: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    ctx: JobContext | None = None

    def run(self, fn: Any, payload: Any, ctx: JobContext) -> Any:
        self.ctx = ctx
        try:
            self.result = fn(payload, ctx)
            return self.result
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.done.set()


class StopReason(enum.Enum):
    """Why an attempt was stopped before its task returned (a timeout is its own outcome)."""

    CANCELLED = "cancelled"
    """A user cancelled the job: recorded ``cancelled``."""
    LEASE_LOST = "lease_lost"
    """The lease renewal found another attempt owns the job: this one's outcome is moot."""


@dataclass(kw_only=True)
class _Running:
    job: Job
    scope: anyio.CancelScope
    ctx: JobContext
    reason: StopReason | None = None


@dataclass(kw_only=True)
class ExecutorPool:
    """Run RunJobs: async tasks on the loop, sync tasks in worker threads.

    Inputs: RunJob; CancelRequested (from the event bus). Outputs: JobSucceeded and
    JobCancelled are stored here (batched) and their deliveries acked; JobFailed goes to the
    retrier, which settles it. Lease renewals for everything in flight, in one batch.
    Restart: permanent. State: the attempts in flight (their cancel scopes).
    """

    runs: MemoryObjectReceiveStream[RunJob]
    failures: MemoryObjectSendStream[JobFailed]
    registry: TaskRegistry
    store: JobStore
    transport: Transport
    events: EventBus
    clock: Clock
    after_attempt: Sequence[AfterAttempt] = ()
    """Called with each outcome once it is recorded (or handed to the retrier): log shipping,
    and later Prometheus and tracing. Synchronous and quick; exceptions are logged."""
    concurrency: int = 8
    lease: float = limits.LEASE_SECONDS
    progress_interval: float = 0.25
    retrying: Retrying = field(default_factory=Retrying)
    _running: dict[str, _Running] = field(default_factory=dict, init=False)
    _cancel_early: set[str] = field(default_factory=set, init=False)
    _progress: dict[str, tuple[int, float, str | None]] = field(default_factory=dict, init=False)
    _progress_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _inflight: int = field(default=0, init=False)
    _forced: bool = field(default=False, init=False)
    _shields: set[anyio.CancelScope] = field(default_factory=set, init=False)
    _idle: anyio.Event | None = field(default=None, init=False)
    _stop: anyio.Event | None = field(default=None, init=False)
    _counts: ExecutorStats = field(default_factory=ExecutorStats, init=False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop = anyio.Event()
        limiter = anyio.CapacityLimiter(self.concurrency)
        send, receive = anyio.create_memory_object_stream[Outcome](self.concurrency)
        async with anyio.create_task_group() as tg, send, receive:
            await tg.start(self._listen_for_cancels)
            for _ in range(self.concurrency):
                tg.start_soon(self._executor, send.clone(), limiter)
            tg.start_soon(self._write_outcomes, receive.clone())
            tg.start_soon(self._write_progress)
            tg.start_soon(self._renew_leases)
            task_status.started()
            await self._stop.wait()
            await self._wait_idle()
            tg.cancel_scope.cancel()

    async def stop(self) -> None:
        """Take no new work; ``run`` returns once every attempt in flight is stored."""
        if self._stop is not None:
            self._stop.set()

    def force(self) -> None:
        """A forced stop (second signal): do not wait for sync tasks still in their threads;
        their jobs stay claimed and their leases bring them back (``worker_lost``)."""
        self._forced = True
        for scope in list(self._shields):
            scope.cancel()

    @contextlib.contextmanager
    def _unless_forced(self) -> Iterator[None]:
        """Shielded from the pool's cancellation (what is done gets stored, even past the
        grace, waiting out a dependency outage), but not from ``force()``."""
        with anyio.CancelScope(shield=True) as scope:
            if self._forced:
                scope.cancel()
            self._shields.add(scope)
            try:
                yield
            finally:
                self._shields.discard(scope)

    def cancel(self, job_id: str) -> bool:
        """Cancel the running attempt of ``job_id`` here; remember it if it has not started."""
        running = self._running.get(job_id)
        if running is None:
            self._cancel_early.add(job_id)
            if len(self._cancel_early) > 10_000:
                self._cancel_early.pop()
            return False
        running.reason = StopReason.CANCELLED
        running.scope.cancel()
        running.ctx.cancel()
        return True

    def idle(self) -> bool:
        """No attempt in flight here: every outcome received has been stored."""
        return self._inflight == 0

    def statistics(self) -> ExecutorStats:
        return replace(self._counts, capacity=self.concurrency, busy=len(self._running))

    # ------------------------------------------------------------ executors

    async def _executor(
        self, outcomes: MemoryObjectSendStream[Outcome], limiter: anyio.CapacityLimiter
    ) -> None:
        async with outcomes:
            while True:
                if self._stop is not None and self._stop.is_set():
                    await anyio.sleep_forever()
                try:
                    run = await self.runs.receive()
                except anyio.EndOfStream:
                    return
                self._inflight += 1
                if self._stop is not None and self._stop.is_set():
                    # Stopping: take no new work; give the job back without burning the attempt.
                    with self._unless_forced():
                        await self._release(run.job.id, run.job.attempts, run.delivery_tag)
                    self._check_idle()
                    continue
                call = _ThreadCall()
                try:
                    outcome = await self._execute(run, limiter, call)
                except anyio.get_cancelled_exc_class():
                    with self._unless_forced():
                        await self._settle_cut(run, call)
                    raise
                try:
                    await outcomes.send(outcome)
                except anyio.get_cancelled_exc_class():
                    with self._unless_forced():
                        await self._settle_now(outcome)
                    raise

    async def _settle_now(self, outcome: Outcome) -> None:
        """Store an outcome the writer will not see (the pool is being cancelled): a success
        or a cancel is stored as usual; a failure gives the job back (the retrier, which
        settles failures, may be gone), so no attempt is burned by the shutdown."""
        if isinstance(outcome, JobFailed):
            await self._release(outcome.job_id, outcome.attempt, outcome.delivery_tag)
        else:
            await self._store_outcomes([outcome])

    async def _settle_cut(self, run: RunJob, call: _ThreadCall) -> None:
        """The pool was cancelled (shutdown past its grace) while ``run`` ran.

        An async task has stopped: give the job back without burning the attempt. A sync
        task's thread cannot be stopped: wait for it and store what it returned, so the job
        does not run again under the same attempt; a failure it raised (``ctx.cancelled`` seen)
        gives the job back. If forced, leave the job claimed: its lease brings it back."""
        job = run.job
        if call.threaded and not call.done.is_set():
            log.warning("waiting_for_sync_task", job_id=job.id, attempt=job.attempts)
            try:
                # Wait for the thread in a thread (no polling), renewing the lease every
                # lease/3 ourselves: the renewer has stopped with the rest of the pool.
                while not await anyio.to_thread.run_sync(
                    call.done.wait, self.lease / 3, abandon_on_cancel=True
                ):
                    renewed = self.clock.now()
                    with contextlib.suppress(StoreError):
                        until = renewed + self.lease
                        renew = Renew(job_id=job.id, attempt=job.attempts, until=until)
                        await self.store.settle([renew], now=renewed)
            except anyio.get_cancelled_exc_class():
                log.warning("sync_task_left_to_its_lease", job_id=job.id)  # forced
                raise
        if call.threaded and call.error is None:
            lines = tuple(call.ctx.log_lines()) if call.ctx else ()
            await self._settle_now(self._succeeded(run, call.started, call.result, lines))
        else:
            await self._release(run.job.id, run.job.attempts, run.delivery_tag)

    async def _execute(
        self, run: RunJob, limiter: anyio.CapacityLimiter, call: _ThreadCall
    ) -> Outcome:
        job = run.job
        started = self.clock.now()
        self._counts.started += 1
        await self.events.publish(
            [
                JobStarted(
                    job_id=job.id,
                    task=job.task,
                    attempt=job.attempts,
                    at=started,
                    queued_at=job.run_at or job.created_at,
                )
            ]
        )
        ctx = JobContext(
            job_id=job.id,
            attempt=job.attempts,
            task=job.task,
            queue=job.queue,
            _sink=self._on_progress,
        )
        try:
            spec = self.registry.get(job.task)
        except UnknownTask as exc:
            return self._failed(
                run, started, JobError(code=exc.code, message=exc.message), retryable=False
            )
        running = _Running(job=job, scope=anyio.CancelScope(), ctx=ctx)
        self._running[job.id] = running
        if job.cancel_requested or job.id in self._cancel_early:
            # Cancelled before it started: the task is never called.
            self._cancel_early.discard(job.id)
            del self._running[job.id]
            return self._cancelled(run, ())
        result: Any = None
        try:
            with running.scope, anyio.move_on_after(job.timeout or float("inf")) as deadline:
                result = await self._call(spec, job, ctx, limiter, call, started)
        except Retry as exc:
            return self._failed(
                run, started, _error("retry_requested", exc), retry_delay=exc.delay, ctx=ctx
            )
        except Exception as exc:
            return self._failed(
                run, started, _error("task_error", exc), error_types=type_names(type(exc)), ctx=ctx
            )
        finally:
            ctx.cancel()
            del self._running[job.id]
        lines = tuple(ctx.log_lines())
        if running.scope.cancelled_caught or running.reason is not None:
            if running.reason is StopReason.LEASE_LOST:
                return self._failed(
                    run,
                    started,
                    JobError(
                        code="lease_lost", message="the lease expired; another attempt owns the job"
                    ),
                    ctx=ctx,
                )
            return self._cancelled(run, lines)
        if deadline.cancelled_caught:
            message = f"the attempt ran longer than its timeout of {job.timeout} s"
            return self._failed(run, started, JobError(code="timeout", message=message), ctx=ctx)
        return self._succeeded(run, started, result, lines)

    def _succeeded(
        self, run: RunJob, started: float, result: Any, lines: tuple[str, ...]
    ) -> JobSucceeded | JobFailed:
        job = run.job
        refused = find_unstorable_result(result)
        if refused is not None:
            message = f"the task's {refused.where} {refused.why}"
            error = JobError(code="result_not_storable", message=clean_text(message)[:2000])
            return self._failed(run, started, error, retryable=False)
        try:
            encode_value(result)
        except TypeError as exc:
            error = JobError(code="result_not_serializable", message=str(exc), type="TypeError")
            return self._failed(run, started, error, retryable=False)
        return JobSucceeded(
            job_id=job.id,
            task=job.task,
            attempt=job.attempts,
            at=self.clock.now(),
            started_at=started,
            created_at=job.created_at,
            result=result,
            delivery_tag=run.delivery_tag,
            log_lines=lines,
        )

    async def _call(
        self,
        spec: TaskSpec,
        job: Job,
        ctx: JobContext,
        limiter: anyio.CapacityLimiter,
        call: _ThreadCall,
        started: float,
    ) -> Any:
        if spec.is_async:
            return await spec.fn(job.payload, ctx)
        # Abandoned on cancel: a timeout or a cancel records its outcome at once (the thread
        # finishes on its own; ``ctx.cancelled`` tells it to stop). A shutdown waits for it
        # instead (``_settle_cut``).
        call.threaded, call.started = True, started
        return await anyio.to_thread.run_sync(
            call.run, spec.fn, job.payload, ctx, limiter=limiter, abandon_on_cancel=True
        )

    def _cancelled(self, run: RunJob, lines: tuple[str, ...]) -> JobCancelled:
        job = run.job
        return JobCancelled(
            job_id=job.id,
            task=job.task,
            attempt=job.attempts,
            at=self.clock.now(),
            delivery_tag=run.delivery_tag,
            log_lines=lines,
        )

    def _failed(
        self,
        run: RunJob,
        started: float,
        error: JobError,
        *,
        retryable: bool = True,
        retry_delay: float | None = None,
        error_types: tuple[str, ...] = (),
        ctx: JobContext | None = None,
    ) -> JobFailed:
        job = run.job
        return JobFailed(
            job_id=job.id,
            task=job.task,
            attempt=job.attempts,
            max_attempts=job.max_attempts,
            at=self.clock.now(),
            started_at=started,
            error=error,
            error_types=error_types,
            retryable=retryable,
            retry_delay=retry_delay,
            delivery_tag=run.delivery_tag,
            log_lines=tuple(ctx.log_lines()) if ctx else (),
        )

    async def _release(self, job_id: str, attempt: int, delivery_tag: int) -> None:
        """Shutdown cancelled the attempt: give the job back without burning the attempt.
        If the store or the transport cannot be reached, the job's lease brings it back."""
        self._inflight -= 1
        try:
            await self.store.settle([Release(job_id=job_id, attempt=attempt)], now=self.clock.now())
            await self.transport.nack([delivery_tag], requeue=True)
        except (StoreError, TransportError) as exc:
            log.warning("release_failed", job_id=job_id, error=exc.message)
            return
        self._counts.released += 1

    # ------------------------------------------------------------ writers

    async def _write_outcomes(self, outcomes: MemoryObjectReceiveStream[Outcome]) -> None:
        async with outcomes:
            while True:
                try:
                    batch = await receive_batch(outcomes, 256)
                except anyio.EndOfStream:
                    return
                except anyio.get_cancelled_exc_class():
                    # Cancelled with outcomes still buffered: store them, or give them back.
                    with self._unless_forced():
                        while True:
                            try:
                                outcome = outcomes.receive_nowait()
                            except (anyio.WouldBlock, anyio.EndOfStream):
                                break
                            await self._settle_now(outcome)
                    raise
                with self._unless_forced():  # a batch taken is stored, even past the grace
                    await self._store_outcomes(batch)

    async def _store_outcomes(self, batch: list[Outcome]) -> None:
        settled: list[JobSucceeded | JobCancelled] = []
        failed: list[JobFailed] = []
        for outcome in batch:
            if isinstance(outcome, JobFailed):
                failed.append(outcome)
            else:
                settled.append(outcome)
        if settled:
            changes = [
                Complete(job_id=o.job_id, attempt=o.attempt, result=o.result)
                if isinstance(o, JobSucceeded)
                else MarkCancelled(job_id=o.job_id, attempt=o.attempt)
                for o in settled
            ]
            now = self.clock.now()
            applied = await settle_isolated(
                self.store, changes, now=now, what="settle", retrying=self.retrying
            )
            stale = [o for o, job in zip(settled, applied, strict=True) if job is None]
            for o in stale:
                log.warning("stale_outcome_dropped", job_id=o.job_id, attempt=o.attempt)
            self._counts.stale_outcomes += len(stale)
            refused = [
                (o, job)
                for o, job in zip(settled, applied, strict=True)
                if isinstance(job, NotStorable)
            ]
            # A refused result fails its job for good (the retrier buries it and acks its
            # delivery); a refused cancel is left to its lease. Neither holds up the rest.
            failed += [_not_storable(o, exc) for o, exc in refused if isinstance(o, JobSucceeded)]
            kept = [
                (o, job)
                for o, job in zip(settled, applied, strict=True)
                if not isinstance(job, NotStorable)
            ]
            tags = [o.delivery_tag for o, _ in kept]
            await persist("ack", lambda: self.transport.ack(tags), retrying=self.retrying)
            self._after_attempt([o for o, _ in kept])
            await self.events.publish([o for o, job in kept if job is not None])
        for f in failed:
            await self.failures.send(f)
        if failed:
            self._after_attempt(failed)
            await self.events.publish(failed)
        self._counts.finished += len(batch)
        self._inflight -= len(batch)
        self._check_idle()

    def _after_attempt(self, outcomes: Sequence[Outcome]) -> None:
        """Run every ``after_attempt`` hook on each recorded outcome; a hook that raises is
        logged and never stops the outcome path."""
        for hook in self.after_attempt:
            for outcome in outcomes:
                try:
                    hook(outcome)
                except Exception as exc:
                    log.error("after_attempt_hook_failed", hook=repr(hook), error=repr(exc))

    def _on_progress(self, job_id: str, attempt: int, percent: float, message: str | None) -> None:
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
                    r.reason = StopReason.LEASE_LOST
                    r.scope.cancel()
                    r.ctx.cancel()

    async def _listen_for_cancels(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with self.events.subscribe(buffer=1024, kinds=[CancelRequested]) as events:
            task_status.started()
            while True:
                for event in await receive_batch(events, 4096):
                    if isinstance(event, CancelRequested):
                        self.cancel(event.job_id)

    # ------------------------------------------------------------ idle tracking

    async def _wait_idle(self) -> None:
        while self._inflight > 0:
            self._idle = anyio.Event()
            await self._idle.wait()

    def _check_idle(self) -> None:
        if self._inflight <= 0 and self._idle is not None:
            self._idle.set()


def _error(code: str, exc: BaseException) -> JobError:
    message = str(exc) or type(exc).__name__
    return JobError(
        code=code,
        message=clean_text(message[:2000]),
        type=clean_text(f"{type(exc).__module__}.{type(exc).__qualname__}"),
    )


def _not_storable(outcome: JobSucceeded, exc: NotStorable) -> JobFailed:
    """The store refused the result: the job fails for good with ``result_not_storable``."""
    return JobFailed(
        job_id=outcome.job_id,
        task=outcome.task,
        attempt=outcome.attempt,
        max_attempts=outcome.attempt,
        at=outcome.at,
        started_at=outcome.started_at,
        error=JobError(code="result_not_storable", message=clean_text(exc.message)[:2000]),
        retryable=False,
        delivery_tag=outcome.delivery_tag,
        log_lines=outcome.log_lines,
    )
