"""DLQ keeper: dead letters stored with their reason; listing and replay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from actors.attempt import public_failed
from actors.outbox import publish_jobs
from actors.settle import Entry, Recorder
from taskflow.clock import Clock
from taskflow.errors import NotStorable
from taskflow.jobs import Job, JobError, JobStatus
from taskflow.messages import AttemptFailed, DeadLetterJob, JobDeadLettered, JobReplayed
from taskflow.ports import Bury, EventBus, JobQueries, JobQuery, JobStore, Transport
from taskflow.streams import receive_batch


@dataclass(slots=True)
class DlqStats:
    buried: int = 0
    replayed: int = 0


@dataclass(kw_only=True)
class DlqKeeper:
    """Bury failed jobs and replay them on request.

    Inputs: DeadLetterJob (from the retrier); ``replay``/``replay_all`` calls.
    Outputs: Bury + ack through ``recorder``, then JobFailed (``will_retry`` false) and
    JobDeadLettered events; JobMessages and JobReplayed on replay.
    Restart: permanent. State: none; dead letters are jobs with status ``failed``.
    """

    inbox: MemoryObjectReceiveStream[DeadLetterJob]
    recorder: Recorder
    store: JobStore
    queries: JobQueries
    transport: Transport
    events: EventBus
    clock: Clock
    _counts: DlqStats = field(default_factory=DlqStats, init=False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                batch = await receive_batch(self.inbox, 256)
            except anyio.EndOfStream:
                return
            await self._bury(batch)

    def statistics(self) -> DlqStats:
        return replace(self._counts)

    async def _bury(self, batch: list[DeadLetterJob]) -> None:
        entries = [self._entry(d.failure, d.code) for d in batch]
        applied = await self.recorder.record(entries, what="bury")
        refused = [d for d, job in zip(batch, applied, strict=True) if isinstance(job, NotStorable)]
        if refused:  # their errors were refused: bury them with one we wrote
            entries = [self._entry(_unstorable(d.failure), d.code) for d in refused]
            # One by one: one still refused is left to its lease, not its neighbours.
            applied += [
                job for e in entries for job in await self.recorder.record([e], what="bury")
            ]
        self._counts.buried += sum(isinstance(job, Job) for job in applied)

    def _entry(self, failure: AttemptFailed, code: str) -> Entry:
        error = replace(failure.error, reason=code)
        change = Bury(job_id=failure.job_id, attempt=failure.attempt, error=error)
        events = (
            replace(public_failed(failure, will_retry=False), error=error),
            JobDeadLettered(
                job_id=failure.job_id,
                task=failure.task,
                attempt=failure.attempt,
                at=self.clock.now(),
                error=error,
            ),
        )
        return Entry(change, failure.delivery_tag, events)

    async def dead_letters(
        self, *, limit: int = 50, offset: int = 0, task: str | None = None
    ) -> list[Job]:
        return await self.queries.list(
            JobQuery(status=JobStatus.FAILED, task=task, limit=limit, offset=offset)
        )

    async def replay(self, job_ids: Sequence[str]) -> list[Job]:
        """Replay dead letters: a new attempt series; lineage (replay count, first error) kept.
        Ids that are not dead letters are skipped."""
        now = self.clock.now()
        jobs = await self.store.replay(job_ids, now=now)
        if jobs:
            await publish_jobs(self.transport, self.store, jobs)
            await self.events.publish(
                [JobReplayed(job_id=j.id, replay_count=j.replay_count, at=now) for j in jobs]
            )
        self._counts.replayed += len(jobs)
        return jobs

    async def replay_all(self, *, task: str | None = None, batch: int = 500) -> int:
        """Replay every dead letter (optionally of one task); returns how many."""
        total = 0
        while True:
            page = await self.dead_letters(limit=batch, task=task)
            if not page:
                return total
            replayed = await self.replay([j.id for j in page])
            total += len(replayed)
            if not replayed:
                return total


def _unstorable(failure: AttemptFailed) -> AttemptFailed:
    error = JobError(code="error_not_storable", message="the error could not be stored")
    return replace(failure, error=error)
