"""Waiters: the one subscription every ``wait()`` of a process shares.

A ``wait`` registers an event for its job, reads the job, and sleeps until the job's
terminal event arrives (or a short poll interval passes: an event can be lost, the store is
the truth). The subscription lives as long as the tree, so a wait costs no broker round
trip; before, each call bound its event types, sent a fence through its queue and unbound
them after (about 8 ms of a 15 ms submit -> completion, perf/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from taskflow.messages import Event
from taskflow.ports import EventBus


@dataclass(kw_only=True)
class Waiters:
    """Inputs: the terminal events of every job (``kinds``). Outputs: wakes the waiters of
    that job. Restart: permanent. State: the waiting events (lost on a restart, which the
    waiters' poll covers)."""

    events: EventBus
    kinds: Sequence[type[Event]]
    _waiting: dict[str, set[anyio.Event]] = field(default_factory=dict, init=False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self.events.subscribe(buffer=4096, kinds=self.kinds) as stream:
            task_status.started()
            async for event in stream:
                job_id = getattr(event, "job_id", None)
                for woke in self._waiting.pop(job_id, ()) if job_id else ():
                    woke.set()

    def expect(self, job_id: str) -> anyio.Event:
        """An event set when ``job_id``'s next terminal event arrives; ``forget`` it after."""
        woke = anyio.Event()
        self._waiting.setdefault(job_id, set()).add(woke)
        return woke

    def forget(self, job_id: str, woke: anyio.Event) -> None:
        waiting = self._waiting.get(job_id)
        if waiting is not None:
            waiting.discard(woke)
            if not waiting:
                del self._waiting[job_id]

    def waiting(self) -> int:
        return sum(len(w) for w in self._waiting.values())
