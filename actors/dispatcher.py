"""Dispatcher: transport deliveries -> one fenced claim per batch -> RunJob for the executors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from actors.persist import persist
from actors.slots import Slots
from taskflow import limits
from taskflow.clock import Clock
from taskflow.codec import DecodeError, decode
from taskflow.errors import JobNotFound
from taskflow.log import get_logger
from taskflow.messages import JobMessage, RunJob
from taskflow.ports import DeadMessage, Deliveries, Delivery, JobQueries, JobStore, Transport
from taskflow.streams import receive_batch

log = get_logger("taskflow.dispatcher")


@dataclass(slots=True)
class DispatcherStats:
    delivered: int = 0
    claimed: int = 0
    skipped: int = 0
    """Deliveries acknowledged without running: the job was terminal, cancelled or running."""
    poison: int = 0


@dataclass(kw_only=True)
class Dispatcher:
    """Claim delivered jobs in batches and hand them to the executor pool.

    Inputs: Deliveries from the transport. Outputs: RunJob (to the executor pool); acks for
    deliveries that must not run; for a message that cannot be decoded, is not a job
    reference, or names no stored job: a DeadMessage with the reason, then a nack to the
    transport's dead-letter queue (nothing is dropped silently).
    Restart: permanent. State: none; a delivery is settled by whoever stores its outcome.
    """

    deliveries: Deliveries
    runs: MemoryObjectSendStream[RunJob]
    store: JobStore
    queries: JobQueries
    transport: Transport
    clock: Clock
    owner: str
    lease: float = limits.LEASE_SECONDS
    max_batch: int = 256
    slots: Slots | None = None
    """Executor capacity: no more jobs are claimed than there are free slots (None: no
    bound here, as when the transport's prefetch already bounds the deliveries)."""
    _scope: anyio.CancelScope | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)
    _sent: int = field(default=0, init=False)
    _counts: DispatcherStats = field(default_factory=DispatcherStats, init=False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self._stopping:
            granted = 0
            batch: list[Delivery] | None = None
            with anyio.CancelScope() as scope:
                self._scope = scope
                granted = await self.slots.take(self.max_batch) if self.slots else self.max_batch
                batch = await self._next_batch(granted)
            self._scope = None
            if batch is None:  # stopped, or the deliveries ended
                self._give_back(granted)
                return
            self._sent = 0
            try:
                await self._dispatch(batch)
            finally:
                self._give_back(granted - self._sent)  # slots of jobs not handed over

    def _give_back(self, n: int) -> None:
        if self.slots is not None:
            self.slots.give(n)

    async def stop(self) -> None:
        """Stop taking deliveries; the batch being handed over is finished first."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    async def _exists(self, job_id: str) -> bool:
        try:
            await persist("get", lambda: self.queries.get(job_id))
        except JobNotFound:
            return False
        return True

    async def _dead_letter(self, poison: list[tuple[Delivery, str]], now: float) -> None:
        """Keep each message with its reason, then reject it to the dead-letter queue."""
        if not poison:
            return
        for delivery, reason in poison:
            log.error("poison_message", queue=delivery.queue, reason=reason)
        records = [
            DeadMessage(
                queue=d.queue,
                body=d.body[:4096].decode("utf-8", errors="replace"),
                reason=reason,
                at=now,
            )
            for d, reason in poison
        ]
        await persist("record_dead_messages", lambda: self.store.record_dead_messages(records))
        self._counts.poison += len(poison)
        tags = [d.tag for d, _ in poison]
        await persist("nack", lambda: self.transport.nack(tags, requeue=False))

    def statistics(self) -> DispatcherStats:
        return replace(self._counts)

    async def _next_batch(self, limit: int) -> list[Delivery] | None:
        try:
            return await receive_batch(self.deliveries, limit)
        except anyio.EndOfStream:
            return None

    async def _dispatch(self, batch: list[Delivery]) -> None:
        self._counts.delivered += len(batch)
        now = self.clock.now()
        tags: dict[str, list[int]] = {}  # job id -> its deliveries in this batch
        poison: list[tuple[Delivery, str]] = []
        for delivery in batch:
            try:
                message = decode(delivery.body)
                if not isinstance(message, JobMessage):
                    raise DecodeError(f"expected JobMessage, got {type(message).__name__}")
            except DecodeError as exc:
                poison.append((delivery, f"{exc.code}: {exc.message}"))
                continue
            tags.setdefault(message.job_id, []).append(delivery.tag)
        claimed = []
        if tags:
            claimed = await persist(
                "claim",
                lambda: self.store.claim(
                    list(tags), owner=self.owner, now=now, lease_until=now + self.lease
                ),
            )
        # A job delivered twice in one batch runs once; the extra deliveries are acked. A job
        # that cannot be claimed is done, cancelled or running elsewhere (acked), or unknown.
        claimed_ids = {job.id for job in claimed}
        by_tag = {d.tag: d for d in batch}
        skip: list[int] = []
        for job_id, job_tags in tags.items():
            if job_id in claimed_ids:
                skip += job_tags[1:]
            elif await self._exists(job_id):
                skip += job_tags
            else:
                reason = f"unknown_job: no job {job_id!r} is stored"
                poison += [(by_tag[t], reason) for t in job_tags]
        await self._dead_letter(poison, now)
        if skip:
            self._counts.skipped += len(skip)
            await persist("ack", lambda: self.transport.ack(skip))
        self._counts.claimed += len(claimed)
        for job in claimed:
            await self.runs.send(RunJob(job=job, delivery_tag=tags[job.id][0]))
            self._sent += 1
