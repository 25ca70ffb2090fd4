"""Waiters: one subscription wakes every wait() of a process, per job."""

from __future__ import annotations

import anyio
import pytest

from actors.waiters import Waiters
from taskflow.memory.events import MemoryEventBus
from taskflow.messages import TERMINAL_EVENTS, JobCancelled, JobStarted

pytestmark = pytest.mark.anyio


async def test_a_terminal_event_wakes_the_waiters_of_its_job_only() -> None:
    bus = MemoryEventBus()
    waiters = Waiters(events=bus, kinds=TERMINAL_EVENTS)
    async with anyio.create_task_group() as tg:
        await tg.start(waiters.run)
        a1, a2, b = waiters.expect("a"), waiters.expect("a"), waiters.expect("b")
        assert waiters.waiting() == 3
        await bus.publish([JobStarted(job_id="a", task="t", attempt=1, at=1.0, queued_at=0.0)])
        await bus.publish([JobCancelled(job_id="a", task="t", attempt=1, at=2.0)])
        with anyio.fail_after(5):
            await a1.wait()
            await a2.wait()
        assert not b.is_set()  # another job's waiter sleeps on
        waiters.forget("b", b)
        assert waiters.waiting() == 0
        tg.cancel_scope.cancel()


async def test_forget_is_safe_after_a_wake_and_twice() -> None:
    waiters = Waiters(events=MemoryEventBus(), kinds=TERMINAL_EVENTS)
    woke = waiters.expect("j")
    waiters.forget("j", woke)
    waiters.forget("j", woke)
    assert waiters.waiting() == 0
