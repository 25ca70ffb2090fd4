"""Contract of the Transport port, run over every adapter.

Every test talks to the transport only through the Protocol methods; the memory-only
inspection helpers are used in one clearly marked test at the end. Queue names are fresh per
test, so a real broker shared between tests does not leak messages from one test to another.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from taskflow.codec import decode
from taskflow.memory import MemoryTransport
from taskflow.messages import JobMessage
from taskflow.ports.transport import Deliveries, Delivery, Transport
from tests.rabbit import open_test_transport

pytestmark = pytest.mark.anyio

WAIT = 5.0
"""Upper bound on any single wait for a delivery."""

QUIET = 0.2
"""How long to wait for a delivery that must not come."""


@pytest.fixture(params=["memory", "rabbitmq"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """One transport per test, for each adapter.

    Later adapters plug in here: add their name to ``params`` and a ``case`` that opens the
    adapter and closes it after the ``yield``. ``"rabbitmq"``: ``RabbitMQTransport`` on the
    broker from ``TASKFLOW_TEST_AMQP_URL`` under a fresh prefix, its queues and exchanges
    deleted afterwards (tests/rabbit.py; skipped locally, failed under CI, without a broker;
    asyncio only).
    """
    match request.param:
        case "memory":
            yield MemoryTransport()
        case "rabbitmq":
            async with open_test_transport() as rabbitmq:
                yield rabbitmq
        case other:
            raise AssertionError(f"no Transport adapter named {other!r}")


@pytest.fixture
def queue() -> str:
    return fresh_queue()


# ------------------------------------------------------------------ helpers


def fresh_queue() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


def message(queue: str, priority: int = 0, job_id: str | None = None) -> JobMessage:
    return JobMessage(
        job_id=job_id or str(uuid.uuid4()), task="echo", queue=queue, priority=priority
    )


async def receive(deliveries: Deliveries) -> Delivery:
    with anyio.fail_after(WAIT):
        return await deliveries.receive()


async def receive_message(deliveries: Deliveries) -> tuple[Delivery, JobMessage]:
    delivery = await receive(deliveries)
    decoded = decode(delivery.body)
    assert isinstance(decoded, JobMessage)
    return delivery, decoded


async def assert_nothing_arrives(deliveries: Deliveries) -> None:
    with anyio.move_on_after(QUIET):
        delivery = await deliveries.receive()
        pytest.fail(f"unexpected delivery: {decode(delivery.body)!r}")


# ------------------------------------------------------------------ tests


async def test_a_published_message_is_consumed_intact(transport: Transport, queue: str) -> None:
    sent = JobMessage(job_id=str(uuid.uuid4()), task="resize", queue=queue, priority=3)

    await transport.publish([sent])

    async with transport.consume([queue], prefetch=10) as deliveries:
        delivery, got = await receive_message(deliveries)
        assert got == sent
        assert delivery.queue == queue
        assert delivery.redelivered is False
        await transport.ack([delivery.tag])
        await assert_nothing_arrives(deliveries)


async def test_higher_priority_first_and_fifo_within_a_priority(
    transport: Transport, queue: str
) -> None:
    sent = [
        message(queue, priority=0, job_id="p0-a"),
        message(queue, priority=5, job_id="p5-a"),
        message(queue, priority=9, job_id="p9-a"),
        message(queue, priority=0, job_id="p0-b"),
        message(queue, priority=9, job_id="p9-b"),
    ]
    await transport.publish(sent[:3])
    await transport.publish(sent[3:4])
    await transport.publish([sent[4], message(queue, priority=5, job_id="p5-b")])

    async with transport.consume([queue], prefetch=10) as deliveries:
        order = [(await receive_message(deliveries))[1].job_id for _ in range(6)]

    assert order == ["p9-a", "p9-b", "p5-a", "p5-b", "p0-a", "p0-b"]


async def test_prefetch_bounds_unsettled_deliveries(transport: Transport, queue: str) -> None:
    await transport.publish([message(queue, job_id=f"m{n}") for n in range(3)])

    async with transport.consume([queue], prefetch=2) as deliveries:
        first = await receive(deliveries)
        await receive(deliveries)
        # at the limit: the third message waits although it is there
        with pytest.raises(anyio.WouldBlock):
            deliveries.receive_nowait()
        await assert_nothing_arrives(deliveries)

        await transport.ack([first.tag])  # frees one slot

        _, third = await receive_message(deliveries)
        assert third.job_id == "m2"


async def test_nack_with_requeue_redelivers(transport: Transport, queue: str) -> None:
    sent = message(queue)
    await transport.publish([sent])

    async with transport.consume([queue], prefetch=1) as deliveries:
        first, _ = await receive_message(deliveries)
        await transport.nack([first.tag], requeue=True)

        again, got = await receive_message(deliveries)
        assert got == sent
        assert again.redelivered is True
        await transport.ack([again.tag])
        await assert_nothing_arrives(deliveries)


async def test_nack_without_requeue_does_not_redeliver(transport: Transport, queue: str) -> None:
    poison, after = message(queue), message(queue)
    await transport.publish([poison])

    async with transport.consume([queue], prefetch=1) as deliveries:
        delivery, got = await receive_message(deliveries)
        assert got == poison
        await transport.nack([delivery.tag], requeue=False)
        await transport.publish([after])

        delivery, got = await receive_message(deliveries)
        assert got == after
        await transport.ack([delivery.tag])
        await assert_nothing_arrives(deliveries)


async def test_leaving_consume_requeues_unsettled_deliveries(
    transport: Transport, queue: str
) -> None:
    sent = [message(queue), message(queue), message(queue)]
    for one in sent:  # one call each: a batch may travel as one message (the test below)
        await transport.publish([one])

    # Given a consumer that acks one delivery and leaves two unsettled
    async with transport.consume([queue], prefetch=5) as deliveries:
        acked, _ = await receive_message(deliveries)
        await transport.ack([acked.tag])
        await receive(deliveries)
        await receive(deliveries)

    # When another consumer starts, it gets the two unsettled ones, marked redelivered
    async with transport.consume([queue], prefetch=5) as deliveries:
        got = [await receive_message(deliveries) for _ in range(2)]
        assert {m.job_id for _, m in got} == {m.job_id for m in sent[1:]}
        assert all(d.redelivered for d, _ in got)
        await transport.ack([d.tag for d, _ in got])
        await assert_nothing_arrives(deliveries)


async def test_a_batch_is_delivered_one_reference_each_and_none_is_lost(
    transport: Transport, queue: str
) -> None:
    """A batch published in one call may travel as one broker message (RabbitMQ packs up to
    32 references in one): it is still delivered one reference each, and what was not settled
    comes back; a reference settled already may come back with it (at least once)."""
    sent = [message(queue, job_id=f"b{n}") for n in range(5)]
    await transport.publish(sent)

    async with transport.consume([queue], prefetch=5) as deliveries:
        got = [await receive_message(deliveries) for _ in range(5)]
        assert [m for _, m in got] == sent
        assert len({d.tag for d, _ in got}) == 5
        await transport.ack([got[0][0].tag, got[1][0].tag])
        await transport.nack([got[2][0].tag], requeue=True)
        # b3 and b4 are left unsettled

    async with transport.consume([queue], prefetch=5) as deliveries:
        again: dict[str, Delivery] = {}
        with anyio.move_on_after(QUIET * 3):
            while True:
                delivery, got_message = await receive_message(deliveries)
                again[got_message.job_id] = delivery
        assert {"b2", "b3", "b4"} <= set(again)
        assert all(d.redelivered for d in again.values())
        await transport.ack([d.tag for d in again.values()])
        await assert_nothing_arrives(deliveries)


async def test_rejecting_every_reference_of_a_batch_does_not_redeliver_it(
    transport: Transport, queue: str
) -> None:
    sent = [message(queue, job_id=f"r{n}") for n in range(3)]
    await transport.publish(sent)

    async with transport.consume([queue], prefetch=5) as deliveries:
        got = [await receive(deliveries) for _ in range(3)]
        await transport.nack([got[0].tag], requeue=False)
        await transport.ack([got[1].tag])  # one acked, the others rejected: no redelivery
        await transport.nack([got[2].tag], requeue=False)
        await assert_nothing_arrives(deliveries)
    async with transport.consume([queue], prefetch=5) as deliveries:
        await assert_nothing_arrives(deliveries)


async def test_settling_unknown_or_settled_tags_is_harmless(
    transport: Transport, queue: str
) -> None:
    await transport.publish([message(queue, job_id="one")])

    async with transport.consume([queue], prefetch=1) as deliveries:
        delivery = await receive(deliveries)
        await transport.ack([delivery.tag])
        # settled twice, nacked after the ack, and tags this consumer never got
        await transport.ack([delivery.tag])
        await transport.nack([delivery.tag], requeue=True)
        await transport.nack([delivery.tag], requeue=False)
        await transport.ack([delivery.tag + 1_000_000])
        await transport.nack([delivery.tag + 1_000_001], requeue=True)
        await transport.ack([])
        await transport.nack([], requeue=True)

        # the acked message does not come back, and the consumer still works
        await assert_nothing_arrives(deliveries)
        await transport.publish([message(queue, job_id="two")])
        delivery, got = await receive_message(deliveries)
        assert (got.job_id, delivery.redelivered) == ("two", False)
        await transport.ack([delivery.tag])
    await transport.check()


async def test_one_consumer_gets_messages_from_two_queues(transport: Transport) -> None:
    fast, slow = fresh_queue(), fresh_queue()
    sent = [message(fast), message(slow)]
    await transport.publish(sent)

    async with transport.consume([fast, slow], prefetch=10) as deliveries:
        got = [await receive_message(deliveries) for _ in range(2)]

    assert {m for _, m in got} == set(sent)
    for delivery, msg in got:
        assert delivery.queue == msg.queue


async def test_a_blocked_receive_wakes_when_another_task_publishes(
    transport: Transport, queue: str
) -> None:
    sent = message(queue)
    received: list[JobMessage] = []
    waiting = anyio.Event()

    async with transport.consume([queue], prefetch=1) as deliveries:

        async def consumer() -> None:
            waiting.set()
            delivery, got = await receive_message(deliveries)
            received.append(got)
            await transport.ack([delivery.tag])

        async def publisher() -> None:
            await waiting.wait()
            await anyio.lowlevel.checkpoint()  # the consumer is now inside receive()
            await transport.publish([sent])

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer)
                tg.start_soon(publisher)

    assert received == [sent]


async def test_receive_after_consume_ended_is_end_of_stream(
    transport: Transport, queue: str
) -> None:
    async with transport.consume([queue], prefetch=1) as deliveries:
        pass
    await transport.publish([message(queue)])

    with anyio.fail_after(WAIT), pytest.raises(anyio.EndOfStream):
        await deliveries.receive()
    with pytest.raises(anyio.EndOfStream):
        deliveries.receive_nowait()


async def test_check_succeeds_on_a_usable_transport(transport: Transport) -> None:
    with anyio.fail_after(WAIT):
        await transport.check()


# ------------------------------------------------------------------ memory only


async def test_memory_inspection_shows_depth_and_dead_letters() -> None:
    """MemoryTransport's helpers (not part of the port): queue depth and the dead letters."""
    transport = MemoryTransport()
    queue = fresh_queue()
    poison, kept = message(queue), message(queue)
    await transport.publish([poison, kept])
    assert transport.depth(queue) == 2
    assert transport.depth() == 2

    async with transport.consume([queue], prefetch=2) as deliveries:
        first = await receive(deliveries)
        assert transport.depth(queue) == 1
        await transport.nack([first.tag], requeue=False)

    assert transport.dead_lettered == [(queue, first.body)]
    assert decode(first.body) == poison
    assert transport.depth(queue) == 1  # the other message was never delivered
