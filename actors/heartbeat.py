"""Heartbeat: a worker's vital signs on the event bus, for cluster-wide metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import TaskStatus

from actors.executor import ExecutorStats
from taskflow.clock import Clock
from taskflow.log import get_logger
from taskflow.messages import WorkerHeartbeat
from taskflow.ports import EventBus

log = get_logger("taskflow.heartbeat")


@dataclass(kw_only=True)
class Heartbeat:
    """Publish ``WorkerHeartbeat`` every ``interval`` seconds.

    Inputs: the executor pool's statistics. Outputs: WorkerHeartbeat events (the API's
    metrics actor counts workers online and their throughput from them).
    Restart: permanent. State: none.
    """

    events: EventBus
    clock: Clock
    worker_id: str
    queues: Sequence[str]
    executor: Callable[[], ExecutorStats]
    interval: float = 2.0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            stats = self.executor()
            beat = WorkerHeartbeat(
                worker_id=self.worker_id,
                at=self.clock.now(),
                interval=self.interval,
                queues=tuple(self.queues),
                capacity=stats.capacity,
                busy=stats.busy,
                started=stats.started,
                finished=stats.finished,
            )
            try:
                await self.events.publish([beat])
            except Exception as exc:  # a missed beat is harmless; the next one follows
                log.warning("heartbeat_failed", error=str(exc))
            await anyio.sleep(self.interval)
