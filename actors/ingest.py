"""Ingest: validate submissions, store them in groups, publish what is due."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.outbox import publish_jobs
from taskflow import limits
from taskflow.clock import Clock
from taskflow.errors import NotStorable, ShuttingDown, ValidationError
from taskflow.jobs import Job, JobStatus
from taskflow.log import get_logger
from taskflow.messages import JobSubmitted, NewJob, SubmitJobs
from taskflow.ports import EventBus, Inserted, JobStore, Transport
from taskflow.registry import TaskRegistry
from taskflow.storable import find_unstorable, text_problem
from taskflow.streams import receive_batch

log = get_logger("taskflow.ingest")

PUBLISH_BACKLOG = 256
"""Committed groups waiting for the publisher, at most (each up to ``max_group`` jobs)."""


@dataclass(kw_only=True)
class Submission:
    """A SubmitJobs command waiting for its group commit."""

    command: SubmitJobs
    jobs: list[Job]
    """Built (and checked) once, by ``submit``: ids, defaults, ``created_at``."""
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Inserted | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class IngestStats:
    submitted: int = 0
    batches: int = 0
    rejected: int = 0
    published: int = 0
    """Jobs published (confirmed) and marked published."""
    publish_deferred: int = 0
    """Jobs stored but not published at once (the transport failed): the outbox sweep's."""


@dataclass(kw_only=True)
class Ingest:
    """Turn SubmitJobs into stored jobs and published messages, many requests per round trip.

    Inputs: Submission (through ``submit``, into its own mailbox). Outputs: rows in the
    JobStore, JobMessages on the transport, JobSubmitted events. Restart: permanent. State:
    none beyond the mailbox, which ``close()`` releases once the tree is done with it.
    """

    store: JobStore
    transport: Transport
    events: EventBus
    registry: TaskRegistry
    clock: Clock
    max_group: int = 1000
    key_ttl: float = limits.IDEMPOTENCY_TTL
    crash_after_commit: bool = False
    """Fault injection for the fault suite only: hard-exit (status 97) once a submission's
    rows are committed and before they are published, as a crash there would."""
    mailbox: int = 64
    """Submissions waiting for a group commit; callers wait (backpressure) beyond it."""
    _outbox: MemoryObjectSendStream[Submission] = field(init=False, repr=False)
    _inbox: MemoryObjectReceiveStream[Submission] = field(init=False, repr=False)
    _stopping: bool = field(default=False, init=False)
    _counts: IngestStats = field(default_factory=IngestStats, init=False)

    def __post_init__(self) -> None:
        self._outbox, self._inbox = anyio.create_memory_object_stream[Submission](self.mailbox)

    def close(self) -> None:
        """Release the mailbox (after ``run`` has returned for good)."""
        self._outbox.close()
        self._inbox.close()

    async def submit(self, command: SubmitJobs) -> Inserted:
        """Store a batch; returns once it is durable (committed). Its due jobs are published
        right after, off the caller's path, with those of other commits (a publish that fails
        leaves them to the outbox sweep: they run all the same, invariant 1).

        Raises ``ValidationError``/``UnknownTask`` for bad input, ``IdempotencyConflict``,
        ``ShuttingDown`` once stopping, and store/transport errors.
        """
        if self._stopping:
            raise ShuttingDown()
        # Built and checked before queueing: bad input fails fast, and nothing is built twice.
        submission = Submission(command=command, jobs=self._build(command, now=self.clock.now()))
        try:
            await self._outbox.send(submission)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ShuttingDown() from None
        await submission.done.wait()
        if submission.error is not None:
            raise submission.error
        assert submission.result is not None
        return submission.result

    @property
    def stopping(self) -> bool:
        """Stopped taking submissions (the process is draining)."""
        return self._stopping

    async def stop(self) -> None:
        self._stopping = True
        self._outbox.close()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Committed jobs wait here for the publisher; bounded, so a stalled transport slows
        # the commits down (backpressure) instead of growing without end.
        due_send, due_receive = anyio.create_memory_object_stream[list[Job]](PUBLISH_BACKLOG)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._publish_due, due_receive)
            task_status.started()
            async with due_send:  # closed when intake ends: the publisher drains, then ends
                while True:
                    try:
                        first = await self._inbox.receive()
                    except anyio.EndOfStream:
                        return
                    group = [first]
                    size = len(first.command.jobs)
                    while size < self.max_group:
                        try:
                            nxt = self._inbox.receive_nowait()
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                        group.append(nxt)
                        size += len(nxt.command.jobs)
                    await self._commit(group, due_send)

    async def _publish_due(self, due: MemoryObjectReceiveStream[list[Job]]) -> None:
        """Publish committed jobs, then mark them published: everything waiting goes in one
        confirmed publish and one mark, while the next group commits."""
        async with due:
            while True:
                try:
                    batches = await receive_batch(due, PUBLISH_BACKLOG)
                except anyio.EndOfStream:
                    return
                jobs = [job for batch in batches for job in batch]
                try:
                    await publish_jobs(self.transport, self.store, jobs)
                except Exception as exc:
                    # The rows are committed: the reaper's outbox sweep publishes them later,
                    # so the submissions stay accepted (invariant 1).
                    log.warning("publish_deferred", jobs=len(jobs), error=str(exc))
                    self._counts.publish_deferred += len(jobs)
                else:
                    self._counts.published += len(jobs)

    def statistics(self) -> IngestStats:
        return replace(self._counts)

    # ------------------------------------------------------------ internals

    def _build(self, command: SubmitJobs, *, now: float) -> list[Job]:
        if not command.jobs:
            raise ValidationError("a submission needs at least one job", field="data")
        key = command.idempotency_key
        if key is not None and (problem := text_problem(key)):
            raise ValidationError("invalid idempotency key", fields={"idempotency_key": problem})
        single = len(command.jobs) == 1
        ids = new_ids(len(command.jobs))
        return [
            self._job(new, now, next(ids), "" if single else f"jobs[{i}].")
            for i, new in enumerate(command.jobs)
        ]

    def _job(self, new: NewJob, now: float, job_id: str, where: str = "") -> Job:
        refused = find_unstorable(new.payload, f"{where}payload")
        if refused is not None:
            raise ValidationError(
                f"{refused.where} {refused.why}", fields={refused.where: refused.why}
            )
        if new.queue is not None and (problem := text_problem(new.queue)):
            raise ValidationError(f"{where}queue {problem}", fields={f"{where}queue": problem})
        spec = self.registry.get(new.task)
        priority = spec.priority if new.priority is None else new.priority
        max_attempts = spec.policy.max_attempts if new.max_attempts is None else new.max_attempts
        timeout = spec.timeout if new.timeout is None else new.timeout
        problems = {}
        if not limits.MIN_PRIORITY <= priority <= limits.MAX_PRIORITY:
            problems["priority"] = (
                f"must be between {limits.MIN_PRIORITY} and {limits.MAX_PRIORITY}"
            )
        if not 0 <= new.delay <= limits.MAX_DELAY_SECONDS:
            problems["delay"] = f"must be >= 0 and <= {limits.MAX_DELAY_SECONDS:g}"
        if not 1 <= max_attempts <= limits.MAX_ATTEMPTS:
            problems["max_attempts"] = f"must be between 1 and {limits.MAX_ATTEMPTS}"
        if timeout is not None and not 0 < timeout <= limits.MAX_TIMEOUT_SECONDS:
            problems["timeout"] = f"must be > 0 and <= {limits.MAX_TIMEOUT_SECONDS:g}"
        if problems:
            raise ValidationError("invalid job", fields=problems)
        scheduled = new.delay > 0
        return Job(
            id=job_id,
            task=new.task,
            payload=new.payload,
            queue=new.queue or spec.queue,
            status=JobStatus.SCHEDULED if scheduled else JobStatus.PENDING,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            created_at=now,
            updated_at=now,
            run_at=now + new.delay if scheduled else None,
        )

    async def _commit(
        self, group: list[Submission], due_send: MemoryObjectSendStream[list[Job]]
    ) -> None:
        """One insert for all unkeyed submissions, one per keyed one; wake the submitters;
        hand the due jobs to the publisher."""
        now = self.clock.now()
        plain: list[tuple[Submission, list[Job]]] = []
        stored: list[tuple[Submission, list[Job], Inserted]] = []
        for sub in group:
            jobs = sub.jobs  # checked by ``submit``; the store refuses what slipped through
            if sub.command.idempotency_key is None:
                plain.append((sub, jobs))
                continue
            try:
                inserted = await self.store.insert(
                    jobs,
                    now=now,
                    idempotency_key=sub.command.idempotency_key,
                    request_hash=sub.command.request_hash,
                    key_expires_at=now + self.key_ttl,
                )
            except Exception as exc:
                self._fail(sub, exc)
                continue
            stored.append((sub, [] if inserted.replayed else jobs, inserted))
        if plain:
            stored.extend(await self._insert_isolated(plain, now))
        new_jobs = [job for _, jobs, _ in stored for job in jobs]
        due = [j for j in new_jobs if j.status is JobStatus.PENDING]
        if self.crash_after_commit and new_jobs:
            os._exit(97)  # the outbox fault hook: committed, not published
        if due:
            await due_send.send(due)
        await self.events.publish(
            [
                JobSubmitted(
                    job_id=j.id,
                    task=j.task,
                    queue=j.queue,
                    at=now,
                    scheduled=j.status is JobStatus.SCHEDULED,
                )
                for j in new_jobs
            ]
        )
        self._counts.batches += 1
        self._counts.submitted += len(new_jobs)
        for sub, _, inserted in stored:
            sub.result = inserted
            sub.done.set()

    async def _insert_isolated(
        self, plain: list[tuple[Submission, list[Job]]], now: float
    ) -> list[tuple[Submission, list[Job], Inserted]]:
        """One insert for the whole group. If the store refuses a value (a data error, not an
        outage), the group is split in halves until the refused submission stands alone: it
        alone is failed, and every other one is stored as if it had come alone."""
        try:
            await self.store.insert([job for _, jobs in plain for job in jobs], now=now)
        except NotStorable as exc:
            if len(plain) == 1:
                log.warning("submission_not_storable", jobs=len(plain[0][1]), error=exc.message)
                self._fail(plain[0][0], exc)
                return []
            mid = len(plain) // 2
            return [
                *await self._insert_isolated(plain[:mid], now),
                *await self._insert_isolated(plain[mid:], now),
            ]
        except Exception as exc:
            for sub, _ in plain:
                self._fail(sub, exc)
            return []
        return [(sub, jobs, Inserted(job_ids=tuple(j.id for j in jobs))) for sub, jobs in plain]

    def _fail(self, sub: Submission, exc: BaseException) -> None:
        self._counts.rejected += 1
        sub.error = exc
        sub.done.set()


def new_ids(n: int) -> Iterator[str]:
    """``n`` random (version 4) UUIDs as strings, from one ``os.urandom`` call: the same ids
    as ``str(uuid.uuid4())``, without an object and a system call per job."""
    raw = bytearray(os.urandom(16 * n))
    for i in range(0, 16 * n, 16):
        raw[i + 6] = raw[i + 6] & 0x0F | 0x40  # version 4
        raw[i + 8] = raw[i + 8] & 0x3F | 0x80  # the RFC 4122 variant
        h = raw[i : i + 16].hex()
        yield f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
