"""Reaper: expired leases -> run again; expired records -> deleted."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import anyio
from anyio.abc import TaskStatus

from actors.outbox import publish_jobs
from taskflow import limits
from taskflow.clock import Clock
from taskflow.errors import LogStoreError, StoreError, TransportError
from taskflow.joblog import Notes
from taskflow.log import get_logger
from taskflow.messages import JobDeadLettered
from taskflow.ports import EventBus, JobStore, LogStore, Transport
from taskflow.ports.cache import COUNTS_KEY, Cache, job_key

log = get_logger("taskflow.reaper")


@dataclass(slots=True)
class ReaperStats:
    recovered: int = 0
    buried: int = 0
    purged: int = 0
    sweeps: int = 0
    republished: int = 0


@dataclass(kw_only=True)
class Reaper:
    """Periodic sweeps: recover jobs whose worker stopped renewing its lease; delete terminal
    jobs past their retention together with their logs.

    Inputs: time. Outputs: JobMessages for recovered jobs, JobDeadLettered for jobs whose
    last attempt was lost, deletions. Restart: permanent. State: none.
    """

    store: JobStore
    transport: Transport
    events: EventBus
    logs: LogStore
    notes: Notes | None = None
    """Lifecycle lines for the job's log (worker lost)."""
    clock: Clock
    interval: float = 5.0
    retention_completed: float = limits.RETENTION_COMPLETED
    retention_failed: float = limits.RETENTION_FAILED
    batch: int = 1000
    cache: Cache | None = None
    """Cached views of the jobs retention deletes are dropped once the delete commits."""
    outbox_grace: float = 5.0
    _counts: ReaperStats = field(default_factory=ReaperStats, init=False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.sweep()
            except (StoreError, TransportError) as exc:  # a periodic duty: try next round
                log.warning("sweep_failed", error=exc.message)
            await anyio.sleep(self.interval)

    def statistics(self) -> ReaperStats:
        return replace(self._counts)

    async def sweep(self) -> None:
        now = self.clock.now()
        recovered = await self.store.recover_expired(now=now, limit=self.batch)
        if recovered.requeued:
            await publish_jobs(self.transport, self.store, recovered.requeued)
            log.warning("leases_recovered", jobs=len(recovered.requeued))
        if self.notes is not None:
            for j in (*recovered.requeued, *recovered.buried):
                ended = j.history[-1] if j.history else None
                who = ended.worker if ended is not None else "a worker"
                then = "dead-lettered" if j.status.terminal else "runs again"
                self.notes(
                    j.id, j.attempts, "error", f"worker {who} lost: attempt {j.attempts} {then}"
                )
        # The outbox: pending rows never confirmed by the transport (a crash or a transport
        # failure between commit and publish), left alone for ``outbox_grace`` seconds so a
        # publish in flight is not duplicated needlessly.
        lost = await self.store.unpublished(
            before=now - self.outbox_grace, now=now, limit=self.batch
        )
        if lost:
            await publish_jobs(self.transport, self.store, lost)
            log.warning("outbox_republished", jobs=len(lost))
        if recovered.buried:
            await self.events.publish(
                [
                    JobDeadLettered(
                        job_id=j.id, task=j.task, attempt=j.attempts, at=now, error=j.error
                    )
                    for j in recovered.buried
                    if j.error is not None
                ]
            )
        await self.purge_expired()
        self._counts.recovered += len(recovered.requeued)
        self._counts.buried += len(recovered.buried)
        self._counts.republished += len(lost)
        self._counts.sweeps += 1

    async def purge_expired(self) -> list[str]:
        """Delete up to ``batch`` terminal jobs past their retention, with their logs and
        cached views; their ids."""
        now = self.clock.now()
        purged = await self.store.purge(
            now=now,
            completed_before=now - self.retention_completed,
            failed_before=now - self.retention_failed,
            limit=self.batch,
        )
        if purged:
            if self.cache is not None:
                await self.cache.invalidate([*map(job_key, purged), COUNTS_KEY])
            try:
                await self.logs.delete(purged)
            except LogStoreError as exc:  # S3 down: the jobs are gone, their logs stay behind
                log.warning("purged_logs_not_deleted", jobs=len(purged), error=str(exc)[:300])
        self._counts.purged += len(purged)
        return purged

    async def cleanup(self) -> int:
        """Retention now (``invoke cleanup``): every expired job, batch after batch."""
        total = 0
        while len(purged := await self.purge_expired()) == self.batch:
            total += len(purged)
        return total + len(purged)
