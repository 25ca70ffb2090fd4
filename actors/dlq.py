"""DLQ keeper: dead letters stored with their reason; listing and replay."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from actors.attempt import public_failed
from actors.outbox import publish_jobs
from actors.settle import Entry, Recorder
from taskflow.clock import Clock
from taskflow.errors import LogStoreError, NotStorable
from taskflow.joblog import Notes
from taskflow.jobs import Job, JobError
from taskflow.log import get_logger
from taskflow.messages import AttemptFailed, DeadLetterJob, JobDeadLettered, JobReplayed
from taskflow.ports import (
    Bury,
    DeadLetterQuery,
    EventBus,
    JobQueries,
    JobStore,
    LogStore,
    ReplayRequest,
    Transport,
)
from taskflow.ports.cache import COUNTS_KEY, Cache, job_key
from taskflow.streams import receive_batch

log = get_logger("taskflow.dlq")


@dataclass(slots=True)
class DlqStats:
    buried: int = 0
    replayed: int = 0


@dataclass(kw_only=True)
class DlqKeeper:
    """Bury failed jobs and replay them on request.

    Inputs: DeadLetterJob (from the retrier); ``replay``/``replay_matching``/``purge`` calls.
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
    logs: LogStore
    """Purging a dead letter deletes its log too."""
    notes: Notes | None = None
    """Lifecycle lines for the job's log (dead-lettered, replayed)."""
    cache: Cache | None = None
    """Cached views of the jobs a replay or a purge changes are dropped once it commits."""
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
        if self.notes is not None:
            for job in applied:
                if isinstance(job, Job) and job.error is not None:
                    why = job.error.reason or "gave up"
                    self.notes(job.id, job.attempts, "error", f"dead-lettered ({why}): {job.error}")

    def _entry(self, failure: AttemptFailed, code: str) -> Entry:
        error = replace(failure.error, reason=code)
        change = Bury(job_id=failure.job_id, attempt=failure.attempt, error=error)
        public = replace(error, traceback=None)  # the store keeps it; events stay small
        events = (
            replace(public_failed(failure, will_retry=False), error=public),
            JobDeadLettered(
                job_id=failure.job_id,
                task=failure.task,
                attempt=failure.attempt,
                at=self.clock.now(),
                error=public,
            ),
        )
        return Entry(change, failure.delivery_tag, events)

    async def dead_letters(self, query: DeadLetterQuery | None = None) -> list[Job]:
        """Dead letters matching ``query``, newest first."""
        return await self.queries.list_dead_letters(query or DeadLetterQuery())

    async def count(self, query: DeadLetterQuery | None = None) -> int:
        return await self.queries.count_dead_letters(query or DeadLetterQuery())

    async def replay(
        self, job_ids: Sequence[str], request: ReplayRequest | None = None
    ) -> list[Job]:
        """Replay dead letters: a new attempt series; lineage (replay count, first error,
        a replay record, the first payload if ``request.payload`` replaces it) kept. Ids that
        are not dead letters are skipped."""
        now = self.clock.now()
        jobs = await self.store.replay(job_ids, now=now, request=request)
        await self._invalidate([j.id for j in jobs])
        if jobs:
            await publish_jobs(self.transport, self.store, jobs)
            await self.events.publish(
                [
                    JobReplayed(
                        job_id=j.id, replay_count=j.replay_count, at=now, task=j.task, queue=j.queue
                    )
                    for j in jobs
                ]
            )
        self._counts.replayed += len(jobs)
        if self.notes is not None:
            for j in jobs:
                by = request.by if request and request.by else "unknown"
                why = f": {request.reason}" if request and request.reason else ""
                changed = (
                    " with a corrected payload"
                    if j.replays and j.replays[-1].payload_changed
                    else ""
                )
                self.notes(
                    j.id, 0, "info", f"replayed (replay {j.replay_count}) by {by}{changed}{why}"
                )
        return jobs

    async def replay_matching(
        self,
        query: DeadLetterQuery | None = None,
        request: ReplayRequest | None = None,
        *,
        batch: int = 500,
        limit: int | None = None,
    ) -> int:
        """Replay every dead letter matching ``query`` (at most ``limit``), ``batch`` at a
        time; returns how many. Only those dead before the call: a replayed job that dies
        again is not replayed twice."""
        bounded = self._before_now(query or DeadLetterQuery(), batch)
        request = replace(request or ReplayRequest(), payload=None)  # one payload fits one job
        total = 0
        while limit is None or total < limit:
            if limit is not None:
                bounded = replace(bounded, limit=min(batch, limit - total))
            page = await self.queries.list_dead_letters(bounded)
            if not page:
                break
            replayed = await self.replay([j.id for j in page], request)
            total += len(replayed)
            if not replayed:  # another caller replayed this page first
                break
        return total

    async def purge(self, query: DeadLetterQuery | None = None, *, batch: int = 500) -> int:
        """Delete the dead letters matching ``query`` (and their logs), ``batch`` at a time;
        returns how many."""
        bounded = self._before_now(query or DeadLetterQuery(), batch)
        total = 0
        while purged := await self.store.purge_dead_letters(bounded):
            await self._invalidate(purged)
            try:
                await self.logs.delete(purged)
            except LogStoreError as exc:  # S3 down: the jobs are gone, their logs stay behind
                log.warning("purged_logs_not_deleted", jobs=len(purged), error=str(exc)[:300])
            total += len(purged)
        return total

    async def _invalidate(self, job_ids: Sequence[str]) -> None:
        if self.cache is not None and job_ids:
            await self.cache.invalidate([*map(job_key, job_ids), COUNTS_KEY])

    def _before_now(self, query: DeadLetterQuery, batch: int) -> DeadLetterQuery:
        now = self.clock.now()
        until = now if query.until is None else min(query.until, now)
        # finished_at < until: a job dead in this very instant waits for the next call
        return replace(
            query, until=math.nextafter(until, math.inf), limit=batch, offset=0, before=None
        )


def _unstorable(failure: AttemptFailed) -> AttemptFailed:
    error = JobError(code="error_not_storable", message="the error could not be stored")
    return replace(failure, error=error)
