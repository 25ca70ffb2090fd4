"""EventHub: one bus subscription fanned out to many listeners, bounded per listener, with
Last-Event-ID resumption from a ring of recent events."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from actors.hub import EventHub, Stamped, events_after
from taskflow.memory import MemoryEventBus
from taskflow.messages import JobProgressed, JobStarted, JobSubmitted, JobSucceeded, WorkerHeartbeat
from taskflow.streams import receive_ready
from tests.polling import wait_until

pytestmark = pytest.mark.anyio


def progressed(job_id: str, percent: float) -> JobProgressed:
    return JobProgressed(job_id=job_id, attempt=1, percent=percent, message=None, at=1.0)


async def settle(hub: EventHub, events: int) -> None:
    """Wait until the hub has taken ``events`` events from the bus."""
    await wait_until(lambda: hub.statistics().events >= events)


async def start_stoppable(tg: anyio.abc.TaskGroup, hub: EventHub) -> anyio.CancelScope:
    """Run ``hub`` in ``tg`` under a scope of its own: cancelling it stops the hub alone, so
    the test's task can still hold its streams and watch them being closed."""
    scope = anyio.CancelScope()

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with scope:
            await hub.run(task_status=task_status)

    await tg.start(run)
    return scope


def just_watched(hub: EventHub) -> None:
    """A stream came and went: the hub keeps its ring for a while (for its reconnect)."""
    with hub.listen(job_id="someone"):
        pass


@pytest.fixture
async def running() -> AsyncIterator[tuple[MemoryEventBus, EventHub]]:
    bus = MemoryEventBus()
    hub = EventHub(events=bus, buffer=8, ring=16)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        just_watched(hub)
        yield bus, hub
        tg.cancel_scope.cancel()


def seqs(items: list[Stamped]) -> list[int]:
    return [item.seq for item in items]


async def test_every_listener_gets_the_events_a_job_listener_only_its_jobs(
    running: tuple[MemoryEventBus, EventHub],
) -> None:
    bus, hub = running
    with hub.listen() as everything, hub.listen() as again, hub.listen(job_id="a") as only_a:
        await bus.publish([progressed("a", 10), progressed("b", 20), progressed("a", 30)])
        await settle(hub, 3)
        assert seqs(receive_ready(everything.receive, 100)) == [1, 2, 3]
        assert seqs(receive_ready(again.receive, 100)) == [1, 2, 3]
        got = receive_ready(only_a.receive, 100)
        assert [i.event.percent for i in got] == [10, 30]  # type: ignore[union-attr]
    assert hub.statistics().listeners == 0


async def test_heartbeats_and_control_are_not_streamed(
    running: tuple[MemoryEventBus, EventHub],
) -> None:
    bus, hub = running
    with hub.listen() as listener:
        beat = WorkerHeartbeat(worker_id="w", at=1.0, interval=2.0)
        await bus.publish([beat, progressed("a", 1)])
        await settle(hub, 1)
        await anyio.sleep(0.01)
        assert [type(i.event) for i in receive_ready(listener.receive, 10)] == [JobProgressed]


async def test_a_full_listener_loses_events_alone_and_is_told_how_many(
    running: tuple[MemoryEventBus, EventHub],
) -> None:
    bus, hub = running
    with hub.listen() as slow, hub.listen(buffer=100) as fast:
        # Given a listener that reads nothing, When 30 events arrive in one burst
        await bus.publish([progressed("a", float(i)) for i in range(30)])
        await settle(hub, 30)
        # Then it keeps its first 8 and counts 22 dropped; the other one lost nothing
        assert len(receive_ready(slow.receive, 100)) == 8
        assert slow.take_dropped() == 22
        assert slow.take_dropped() == 0  # reset once taken
        assert len(receive_ready(fast.receive, 100)) == 30
        assert hub.statistics().dropped == 22


async def test_resume_after_an_id_replays_the_ring_in_order(
    running: tuple[MemoryEventBus, EventHub],
) -> None:
    bus, hub = running
    await bus.publish([progressed("a", 1), progressed("b", 2), progressed("a", 3)])
    await settle(hub, 3)
    with hub.listen(after=hub.event_id(1)) as resumed:
        assert resumed.resumed and resumed.since == 1
        assert seqs(receive_ready(resumed.receive, 10)) == [2, 3]
    with hub.listen(job_id="a", after=hub.event_id(1)) as only_a:
        assert seqs(receive_ready(only_a.receive, 10)) == [3]
    with hub.listen(after=hub.event_id(3)) as up_to_date:
        assert up_to_date.resumed and receive_ready(up_to_date.receive, 10) == []


@pytest.mark.parametrize("last_id", ["", "otherhub.1", "garbage", "{hub}.99", "{hub}.x"])
async def test_an_id_the_hub_cannot_resume_starts_fresh(
    running: tuple[MemoryEventBus, EventHub], last_id: str
) -> None:
    bus, hub = running
    await bus.publish([progressed("a", 1)])
    await settle(hub, 1)
    with hub.listen(after=last_id.format(hub=hub.id)) as listener:
        assert not listener.resumed
        assert listener.since == hub.last_seq == 1
        assert receive_ready(listener.receive, 10) == []


async def test_an_id_older_than_the_ring_cannot_be_resumed(
    running: tuple[MemoryEventBus, EventHub],
) -> None:
    bus, hub = running
    await bus.publish([progressed("a", float(i)) for i in range(20)])  # the ring keeps 16
    await settle(hub, 20)
    assert hub.resume_point(hub.event_id(3)) is None  # events 4 and 5 are gone
    assert hub.resume_point(hub.event_id(4)) == 4  # 5..20 are all in the ring


async def test_stopping_the_hub_ends_every_listener_and_a_late_one_is_closed() -> None:
    bus = MemoryEventBus()
    hub = EventHub(events=bus)
    with hub.listen() as early:
        async with anyio.create_task_group() as tg:
            hub_scope = await start_stoppable(tg, hub)
            with hub.listen() as listener:
                hub_scope.cancel()  # the hub stops while this task still listens
                with pytest.raises(anyio.EndOfStream):
                    await listener.receive.receive()
            assert not hub.running
        with pytest.raises(anyio.EndOfStream):  # made before the hub ran: closed at once
            await early.receive.receive()
    with hub.listen() as late, pytest.raises(anyio.EndOfStream):
        await late.receive.receive()


async def test_a_restarted_hub_has_a_new_id(running: tuple[MemoryEventBus, EventHub]) -> None:
    bus, hub = running
    first = hub.id
    async with anyio.create_task_group() as tg:
        await tg.start(EventHub(events=bus).run)
        tg.cancel_scope.cancel()
    again = EventHub(events=bus)
    async with anyio.create_task_group() as tg:
        await tg.start(again.run)
        assert again.id != first and again.resume_point(f"{first}.1") is None
        tg.cancel_scope.cancel()


async def test_labels_come_from_the_events_that_carry_them(
    running: tuple[MemoryEventBus, EventHub],
) -> None:
    bus, hub = running
    await bus.publish(
        [
            JobSubmitted(job_id="a", task="resize", queue="images", at=1.0),
            JobStarted(job_id="b", task="mail", attempt=1, at=1.0, queued_at=1.0, queue="q2"),
            JobSucceeded(job_id="a", task="resize", attempt=1, at=2.0, started_at=1, created_at=1),
            progressed("c", 5),
        ]
    )
    await settle(hub, 4)
    assert hub.labels("a") == ("resize", "images")
    assert hub.labels("b") == ("mail", "q2")
    assert hub.labels("c") is None
    hub.learn("c", "thumb", "default")
    assert hub.labels("c") == ("thumb", "default")


async def test_labels_are_bounded() -> None:
    hub = EventHub(events=MemoryEventBus(), max_labels=3)
    for i in range(5):
        hub.learn(f"j{i}", "t", "q")
    assert [hub.labels(f"j{i}") for i in range(5)] == [None, None, *[("t", "q")] * 3]


# ------------------------------------------------------------------ followers


async def test_a_follower_takes_everything_new_in_one_slice(
    running: tuple[MemoryEventBus, EventHub],
) -> None:
    bus, hub = running
    await bus.publish([progressed("a", 1)])
    await settle(hub, 1)
    with hub.follow() as follower, hub.follow() as other:
        assert follower.since == 1 and not follower.ready()
        await bus.publish([progressed("a", 2), progressed("b", 3), progressed("c", 4)])
        assert await follower.wait(timeout=5)
        items, lost = follower.take(limit=100, behind=100)
        assert (seqs(items), lost) == ([2, 3, 4], 0)
        assert follower.take(limit=100, behind=100) == ([], 0)
        assert not await follower.wait(timeout=0.05)  # nothing new: a keep-alive is due
        items, _ = other.take(limit=2, behind=100)  # the other one is not moved by it
        assert seqs(items) == [2, 3]
        assert seqs(other.take(limit=2, behind=100)[0]) == [4]
        assert hub.statistics().listeners == 2


async def test_a_follower_that_falls_behind_skips_ahead_and_counts_what_it_lost(
    running: tuple[MemoryEventBus, EventHub],
) -> None:
    bus, hub = running
    with hub.follow() as follower:
        await bus.publish([progressed("a", float(i)) for i in range(12)])
        await settle(hub, 12)
        items, lost = follower.take(limit=100, behind=5)  # may lag 5 at most: 7 lost
        assert (seqs(items), lost) == ([8, 9, 10, 11, 12], 7)
        await bus.publish([progressed("a", float(i)) for i in range(20)])  # the ring keeps 16
        await settle(hub, 32)
        items, lost = follower.take(limit=100, behind=100)
        assert (len(items), lost) == (16, 4) and items[0].seq == 17
        assert follower.dropped_total == 11
    assert hub.statistics().dropped == 11


async def test_a_follower_resumes_after_a_known_id_and_is_closed_with_the_hub() -> None:
    bus = MemoryEventBus()
    hub = EventHub(events=bus)
    async with anyio.create_task_group() as tg:
        hub_scope = await start_stoppable(tg, hub)
        just_watched(hub)
        await bus.publish([progressed("a", float(i)) for i in range(3)])
        await settle(hub, 3)
        with hub.follow(after=hub.event_id(1)) as resumed:
            assert resumed.resumed and seqs(resumed.take(10, 100)[0]) == [2, 3]
            hub_scope.cancel()  # the hub stops; this task (still following) is not cancelled
            await wait_until(lambda: not hub.running)
            assert resumed.closed and resumed.ready()
    with hub.follow() as late:
        assert late.closed and await late.wait(timeout=1)


async def test_a_restarted_hub_never_serves_bytes_joined_before_the_restart() -> None:
    bus = MemoryEventBus()
    hub = EventHub(events=bus)

    def frame(item: Stamped) -> bytes:
        return f"{hub.id}:{item.seq}:{item.event.percent};".encode()  # type: ignore[union-attr]

    joined = []
    for run in range(2):
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            just_watched(hub)
            with hub.follow() as follower:
                await bus.publish([progressed("a", float(10 * run + i)) for i in range(3)])
                assert await follower.wait(timeout=5)
                items, _ = follower.take(limit=10, behind=100)
                joined.append(hub.joined(items, frame).data)
            tg.cancel_scope.cancel()
    assert joined[0] != joined[1]  # the same sequence numbers, other events
    assert joined[1].endswith(b":3:12.0;")


async def test_a_hub_nobody_watches_only_counts_and_keeps_nothing() -> None:
    bus = MemoryEventBus()
    hub = EventHub(events=bus, ring=16, idle_after=0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        # Given a stream that left long enough ago, When events arrive
        just_watched(hub)
        await anyio.sleep(0.1)
        await bus.publish(
            [JobSubmitted(job_id=f"j{i}", task="t", queue="q", at=1.0) for i in range(5)]
        )
        await settle(hub, 5)
        # Then they are numbered and counted, but neither kept nor learnt
        assert hub.last_seq == 5 and hub.counts()[JobSubmitted] == 5
        assert len(hub.ring_items()) == 0 and hub.labels("j0") is None
        assert hub.resume_point(hub.event_id(2)) is None  # a gap: a fresh snapshot instead
        with hub.listen() as listener:  # a stream arrives: from now on, everything
            await bus.publish([progressed("a", 1.0)])
            await settle(hub, 6)
            assert seqs(receive_ready(listener.receive, 10)) == [6]
            assert len(hub.ring_items()) == 1
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("limit", [1, 3, 100])
def test_events_after_a_cursor_are_the_same_found_by_arithmetic_or_by_scanning(limit: int) -> None:
    def ring(seqs: list[int]) -> deque[Stamped]:
        return deque(Stamped(seq, progressed("j", 1.0)) for seq in seqs)

    consecutive = ring(list(range(10, 30)))
    gapped = ring([*range(10, 15), *range(20, 35)])  # not consecutive: scanned
    for items in (consecutive, gapped):
        seqs = [item.seq for item in items]
        for cursor in (0, 9, 10, 12, 16, 21, seqs[-2], seqs[-1], 99):
            got = [item.seq for item in events_after(items, cursor, limit)]
            assert got == [s for s in seqs if s > cursor][:limit], (cursor, limit)
    assert events_after(deque(), 5, 10) == []
