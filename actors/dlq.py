"""DLQ keeper: dead letters stored with their reason; listing and replay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from actors.outbox import publish_jobs
from actors.persist import Retrying, persist, settle_isolated
from taskflow.clock import Clock
from taskflow.errors import NotStorable
from taskflow.jobs import Job, JobError, JobStatus
from taskflow.messages import DeadLetterJob, JobDeadLettered, JobReplayed
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
    Outputs: Bury writes + acks, JobDeadLettered; JobMessages and JobReplayed on replay.
    Restart: permanent. State: none; dead letters are jobs with status ``failed``.
    """

    inbox: MemoryObjectReceiveStream[DeadLetterJob]
    store: JobStore
    queries: JobQueries
    transport: Transport
    events: EventBus
    clock: Clock
    retrying: Retrying = field(default_factory=Retrying)
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
        now = self.clock.now()
        changes = [
            Bury(
                job_id=d.failure.job_id,
                attempt=d.failure.attempt,
                error=replace(d.failure.error, reason=d.code),
            )
            for d in batch
        ]
        applied = await settle_isolated(
            self.store, changes, now=now, what="bury", retrying=self.retrying
        )
        for i, job in enumerate(applied):
            if isinstance(job, NotStorable):  # its error was refused: bury it with one we wrote
                error = JobError(
                    code="error_not_storable",
                    message="the error could not be stored",
                    reason=changes[i].error.reason,
                )
                changes[i] = replace(changes[i], error=error)
                (applied[i],) = await settle_isolated(
                    self.store, [changes[i]], now=now, what="bury", retrying=self.retrying
                )
        tags = [
            d.failure.delivery_tag
            for d, job in zip(batch, applied, strict=True)
            if not isinstance(job, NotStorable)  # still refused: left to its lease
        ]
        await persist("ack", lambda: self.transport.ack(tags), retrying=self.retrying)
        events = [
            JobDeadLettered(
                job_id=c.job_id, task=d.failure.task, attempt=c.attempt, at=now, error=c.error
            )
            for d, c, job in zip(batch, changes, applied, strict=True)
            if job is not None and not isinstance(job, NotStorable)
        ]
        self._counts.buried += len(events)
        await self.events.publish(events)

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
