"""Dispatcher: transport deliveries -> one fenced claim per batch -> RunJob for the executors."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from actors.persist import persist
from taskflow.clock import Clock
from taskflow.codec import DecodeError, decode
from taskflow.log import get_logger
from taskflow.messages import JobMessage, RunJob
from taskflow.ports import Deliveries, Delivery, JobStore, Transport
from taskflow.streams import receive_batch

log = get_logger("taskflow.dispatcher")


@dataclass(frozen=True, slots=True)
class DispatcherStats:
    delivered: int
    claimed: int
    skipped: int
    """Deliveries acknowledged without running: the job was terminal, cancelled or running."""
    poison: int


@dataclass(kw_only=True)
class Dispatcher:
    """Claim delivered jobs in batches and hand them to the executor pool.

    Inputs: Deliveries from the transport. Outputs: RunJob (to the executor pool); acks for
    deliveries that must not run; nacks (dead-letter) for messages that cannot be decoded.
    Restart: permanent. State: none; a delivery is settled by whoever stores its outcome.
    """

    deliveries: Deliveries
    runs: MemoryObjectSendStream[RunJob]
    store: JobStore
    transport: Transport
    clock: Clock
    owner: str
    lease: float = 15.0
    max_batch: int = 256
    _scope: anyio.CancelScope | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)
    _stats: dict[str, int] = field(
        default_factory=lambda: {"delivered": 0, "claimed": 0, "skipped": 0, "poison": 0},
        init=False,
    )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self._stopping:
            with anyio.CancelScope() as scope:
                self._scope = scope
                batch = await self._next_batch()
            self._scope = None
            if scope.cancel_called or batch is None:
                return
            await self._dispatch(batch)

    async def stop(self) -> None:
        """Stop taking deliveries; the batch being handed over is finished first."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    def statistics(self) -> DispatcherStats:
        return DispatcherStats(**self._stats)

    async def _next_batch(self) -> list[Delivery] | None:
        try:
            return await receive_batch(self.deliveries, self.max_batch)
        except anyio.EndOfStream:
            return None

    async def _dispatch(self, batch: list[Delivery]) -> None:
        self._stats["delivered"] += len(batch)
        tags: dict[str, list[int]] = {}
        poison: list[int] = []
        for delivery in batch:
            try:
                message = decode(delivery.body)
                if not isinstance(message, JobMessage):
                    raise DecodeError(f"expected JobMessage, got {type(message).__name__}")
            except DecodeError as exc:
                log.error("poison_message", queue=delivery.queue, reason=exc.message)
                poison.append(delivery.tag)
                continue
            tags.setdefault(message.job_id, []).append(delivery.tag)
        if poison:
            self._stats["poison"] += len(poison)
            await persist("nack", lambda: self.transport.nack(poison, requeue=False))
        if not tags:
            return
        now = self.clock.now()
        claimed = await persist(
            "claim",
            lambda: self.store.claim(
                list(tags), owner=self.owner, now=now, lease_until=now + self.lease
            ),
        )
        # A job delivered twice in one batch runs once; the extra delivery is acked.
        skip = [t for job_id, ts in tags.items() for t in ts[1:]]
        claimed_ids = {job.id for job in claimed}
        skip += [ts[0] for job_id, ts in tags.items() if job_id not in claimed_ids]
        if skip:
            self._stats["skipped"] += len(skip)
            await persist("ack", lambda: self.transport.ack(skip))
        self._stats["claimed"] += len(claimed)
        for job in claimed:
            await self.runs.send(RunJob(job=job, delivery_tag=tags[job.id][0]))
