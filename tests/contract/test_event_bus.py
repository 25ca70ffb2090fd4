"""Contract of the EventBus port, run over every adapter.

Every test talks to the bus only through ``publish`` and ``subscribe``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from anyio.abc import ObjectReceiveStream

from taskflow.memory import MemoryEventBus
from taskflow.messages import CancelRequested, Event, JobReplayed, JobSubmitted
from taskflow.ports.events import EventBus
from tests.rabbit import open_test_event_bus

pytestmark = pytest.mark.anyio

WAIT = 5.0
"""Upper bound on any single wait for an event."""

QUIET = 0.2
"""How long to wait for an event that must not come."""


@pytest.fixture(params=["memory", "rabbitmq"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    """One bus per test, for each adapter.

    Later adapters plug in here: add their name to ``params`` and a ``case`` that opens the
    adapter and closes it after the ``yield`` (calling ``require_service`` from
    tests/conftest.py when the service behind it is not reachable). ``"rabbitmq"``:
    ``RabbitMQEventBus`` on the broker from ``TASKFLOW_TEST_AMQP_URL`` under a fresh prefix,
    its exchange deleted afterwards (tests/rabbit.py; asyncio only).
    """
    match request.param:
        case "memory":
            yield MemoryEventBus()
        case "rabbitmq":
            async with open_test_event_bus() as rabbitmq:
                yield rabbitmq
        case other:
            raise AssertionError(f"no EventBus adapter named {other!r}")


# ------------------------------------------------------------------ helpers


def event(n: int) -> JobSubmitted:
    return JobSubmitted(job_id=f"job-{n}", task="echo", queue="default", at=float(n))


def events(start: int, stop: int) -> list[Event]:
    return [event(n) for n in range(start, stop)]


async def take(stream: ObjectReceiveStream[Event], count: int) -> list[Event]:
    with anyio.fail_after(WAIT):
        return [await stream.receive() for _ in range(count)]


async def assert_nothing_arrives(stream: ObjectReceiveStream[Event]) -> None:
    with anyio.move_on_after(QUIET):
        got = await stream.receive()
        pytest.fail(f"unexpected event: {got!r}")


def drain(stream: ObjectReceiveStream[Event]) -> list[Event]:
    """Everything already buffered for a subscriber, without waiting."""
    got: list[Event] = []
    while True:
        try:
            got.append(stream.receive_nowait())
        except anyio.WouldBlock:
            return got


# ------------------------------------------------------------------ tests


async def test_every_subscriber_receives_every_event_in_order(bus: EventBus) -> None:
    async with bus.subscribe() as first, bus.subscribe() as second:
        await bus.publish(events(0, 3))
        await bus.publish(events(3, 5))

        assert await take(first, 5) == events(0, 5)
        assert await take(second, 5) == events(0, 5)
        await assert_nothing_arrives(first)


async def test_a_late_subscriber_does_not_get_earlier_events(bus: EventBus) -> None:
    async with bus.subscribe() as early:
        await bus.publish(events(0, 2))
        async with bus.subscribe() as late:
            await bus.publish(events(2, 3))

            assert await take(late, 1) == [event(2)]
            await assert_nothing_arrives(late)
        assert await take(early, 3) == events(0, 3)


async def test_a_gone_subscriber_gets_nothing_and_does_not_break_publish(
    bus: EventBus,
) -> None:
    # Given a subscriber that left, with an event it never read
    async with bus.subscribe(buffer=1) as gone:
        await bus.publish([event(0)])
    # When events are published after it left (more than its buffer held)
    async with bus.subscribe() as staying:
        with anyio.fail_after(WAIT):
            await bus.publish(events(1, 5))
        # Then the remaining subscriber gets them
        assert await take(staying, 4) == events(1, 5)
    # and the one that left is closed: nothing is delivered to it any more
    with pytest.raises(anyio.ClosedResourceError):
        gone.receive_nowait()
    # and publishing with no subscriber at all is fine
    with anyio.fail_after(WAIT):
        await bus.publish(events(5, 7))


async def test_a_full_subscriber_buffer_does_not_block_publish(bus: EventBus) -> None:
    count = 500
    async with bus.subscribe(buffer=4) as slow, bus.subscribe(buffer=count) as attentive:
        # When far more events are published than the slow subscriber can hold
        with anyio.fail_after(2):
            for n in range(count):
                await bus.publish([event(n)])
            await bus.publish(events(count, 2 * count))

        # Then an attentive subscriber with room still gets all it can hold, in order
        assert await take(attentive, count) == events(0, count)
        # and what the slow one kept is in publish order, with no duplicates
        kept = drain(slow)
        assert kept
        expected = events(0, 2 * count)
        positions = [expected.index(e) for e in kept]
        assert positions == sorted(set(positions))


async def test_a_subscriber_of_some_kinds_gets_only_those(bus: EventBus) -> None:
    wanted = CancelRequested(job_id=str(uuid.uuid4()))
    async with (
        bus.subscribe(kinds=[CancelRequested]) as only_cancels,
        bus.subscribe() as everything,
    ):
        await bus.publish([JobReplayed(job_id="j", replay_count=1, at=1.0), wanted])
        with anyio.fail_after(5):
            assert await only_cancels.receive() == wanted
            assert [await everything.receive(), await everything.receive()][1] == wanted
        await anyio.sleep(0.2)
        with pytest.raises(anyio.WouldBlock):
            only_cancels.receive_nowait()
