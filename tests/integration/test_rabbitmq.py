"""The RabbitMQ adapters against a real broker: pipelined confirms, priorities, refused and
poison messages, prefetch, connection loss and recovery, and the event bus across
connections. The contract suites (tests/contract) cover the ports' behaviour; these tests
cover what only a broker can show. Asyncio only (aiormq)."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiormq
import anyio
import anyio.lowlevel
import pytest
from pamqp import commands as spec

from taskflow.codec import DecodeError, decode, encode
from taskflow.errors import TransportError
from taskflow.messages import Event, JobMessage, JobStarted, JobSubmitted, JobSucceeded
from taskflow.ports.transport import Deliveries, Delivery
from taskflow.rabbitmq import (
    RECONNECT,
    Backoff,
    RabbitMQConnection,
    RabbitMQTransport,
    Session,
    open_rabbitmq_transport,
    routing_key,
)
from taskflow.rabbitmq.transport import _Consumer
from taskflow.streams import receive_batch
from tests.rabbit import Vhost, open_test_event_bus, open_test_transport

pytestmark = pytest.mark.anyio

WAIT = 10.0
QUIET = 0.3
QUICK = Backoff(base=0.05, cap=0.5, jitter=0.5)
"""Reconnect attempts while a test holds the broker's door shut: short, to keep tests fast."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiormq is asyncio-only


@pytest.fixture
async def transport(rabbit_url: str) -> AsyncIterator[RabbitMQTransport]:
    """One broker message per job reference (``pack=1``), so that the broker's prefetch and
    redeliveries count references; the packed transport has tests of its own below."""
    async with open_test_transport(rabbit_url, queues=["work"], pack=1) as transport:
        yield transport


@pytest.fixture
async def packed(rabbit_url: str) -> AsyncIterator[RabbitMQTransport]:
    """The default: a batch travels as messages of up to 32 references each."""
    async with open_test_transport(rabbit_url, queues=["work"]) as transport:
        assert transport.pack == 32
        yield transport


# ------------------------------------------------------------------ helpers


def message(queue: str = "work", priority: int = 0, job_id: str | None = None) -> JobMessage:
    return JobMessage(
        job_id=job_id or str(uuid.uuid4()), task="echo", queue=queue, priority=priority
    )


def job_id(delivery: Delivery) -> str:
    decoded = decode(delivery.body)
    assert isinstance(decoded, JobMessage)
    return decoded.job_id


async def receive(deliveries: Deliveries) -> Delivery:
    with anyio.fail_after(WAIT):
        return await deliveries.receive()


async def assert_nothing_arrives(deliveries: Deliveries) -> None:
    with anyio.move_on_after(QUIET):
        delivery = await deliveries.receive()
        pytest.fail(f"unexpected delivery: {delivery!r}")


async def raw_channel(url: str) -> tuple[aiormq.abc.AbstractConnection, aiormq.abc.AbstractChannel]:
    connection = await aiormq.connect(url)
    return connection, await connection.channel()


async def ready_count(url: str, queue: str) -> int:
    """Messages ready (not delivered) in ``queue``, as the broker counts them."""
    async with aiormq.connect(url) as connection:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)


def live_session(connection: RabbitMQConnection) -> Session:
    session = connection.session
    assert session is not None, "not connected"
    return session


async def lost(session: Session) -> None:
    with anyio.fail_after(WAIT):
        await session.lost.wait()


async def reconnected(connection: RabbitMQConnection, old: Session) -> Session:
    """Wait until ``old`` was lost and a new session is live."""
    await lost(old)
    with anyio.fail_after(WAIT):
        session = await connection.wait_connected()
    assert session.generation > old.generation
    return session


# ------------------------------------------------------------------ publishing


async def test_publisher_confirms_are_pipelined(transport: RabbitMQTransport) -> None:
    sent = [message(job_id=f"m{n}") for n in range(2000)]
    channel = live_session(transport.connection).channel
    in_flight: list[int] = []
    done = False

    async def sample() -> None:
        while not done:
            in_flight.append(len(channel.confirmations))  # publishes awaiting their confirm
            await anyio.lowlevel.checkpoint()

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sample)
        await transport.publish(sent)
        done = True
    published = time.perf_counter() - started

    # many confirms were awaited at once, never more than the window
    assert 1 < max(in_flight) <= transport.confirm_window

    got: list[str] = []
    async with transport.consume(["work"], prefetch=500) as deliveries:
        with anyio.fail_after(WAIT):
            while len(got) < len(sent):
                batch = await receive_batch(deliveries, 500)
                got += [job_id(d) for d in batch]
                await transport.ack([d.tag for d in batch])
        await assert_nothing_arrives(deliveries)
    elapsed = time.perf_counter() - started

    assert sorted(got) == sorted(m.job_id for m in sent)
    assert transport.statistics().published == 2000
    # awaiting each confirm in turn manages about 1.2k msg/s here; pipelined about 10k
    assert published < 5.0, f"publishing 2,000 took {published:.2f} s"
    assert elapsed < 10.0, f"publish + consume of 2,000 took {elapsed:.2f} s"


async def test_a_backlog_comes_out_by_priority(transport: RabbitMQTransport) -> None:
    sent = [message(priority=p, job_id=f"p{p}-{n}") for n in range(10) for p in (0, 5, 9)]
    await transport.publish(sent)

    async with transport.consume(["work"], prefetch=30) as deliveries:
        got = [await receive(deliveries) for _ in range(30)]
        await transport.ack([d.tag for d in got])

    order = [job_id(d) for d in got]
    expected = [f"p{p}-{n}" for p in (9, 5, 0) for n in range(10)]
    assert order == expected


async def test_a_publish_to_a_vanished_queue_raises_then_recovers(
    transport: RabbitMQTransport, rabbit_url: str
) -> None:
    # Given a queue the transport declared, deleted behind its back (an operator, a policy)
    await transport.publish([message("gone")])
    async with aiormq.connect(rabbit_url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(transport.topology.queue("gone"))

    # When a message is published to it, the broker returns it (mandatory): the call fails
    with pytest.raises(TransportError, match="unroutable"):
        await transport.publish([message("gone")])
    assert transport.statistics().publish_failures == 1

    # and the next publish (the outbox's retry) declares the queue again and is confirmed
    await transport.publish([message("gone", job_id="again")])
    async with transport.consume(["gone"], prefetch=1) as deliveries:
        delivery = await receive(deliveries)
        assert job_id(delivery) == "again"
        await transport.ack([delivery.tag])
    await transport.check()


async def test_a_publish_awaiting_a_confirmation_fails_at_once_when_the_session_is_lost(
    rabbit_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A confirmation pending when the connection dies was seen never to resolve (the API's
    submission then hung for the whole 30 s publish timeout while the broker was down). The
    loss of the session ends the publish with a TransportError at once."""
    async with open_test_transport(rabbit_url, queues=["work"]) as transport:
        session = live_session(transport.connection)
        await transport.publish([message("work")])  # declared, confirmed: the path is warm

        async def never_confirmed(*args: Any, **kwargs: Any) -> Any:
            await anyio.sleep_forever()

        monkeypatch.setattr(session.channel, "basic_publish", never_confirmed)

        async def lose_soon() -> None:
            await anyio.sleep(0.2)
            session.lose("test: connection lost mid-publish")

        started = anyio.current_time()
        with anyio.fail_after(5):  # well inside the 30 s publish timeout
            async with anyio.create_task_group() as tg:
                tg.start_soon(lose_soon)
                with pytest.raises(TransportError, match="connection lost while publishing"):
                    await transport.publish([message("work")])
        assert anyio.current_time() - started < 2


async def test_a_publish_the_broker_nacks_raises(rabbit_vhost: Vhost) -> None:
    async with open_test_transport(rabbit_vhost.url, queues=["full"], cleanup=False) as transport:
        # Given a queue that refuses new messages (a length limit with reject-publish)
        await rabbit_vhost.set_policy(
            "full", "\\.full$", '{"max-length": 0, "overflow": "reject-publish"}'
        )
        refused: TransportError | None = None
        with anyio.fail_after(WAIT):
            while refused is None:  # the policy applies within a moment
                try:
                    await transport.publish([message("full")])
                except TransportError as exc:
                    refused = exc
                else:
                    await anyio.sleep(0.1)
        assert "not confirmed" in str(refused)
        assert "nacked by the broker" in str(refused)
        # The failure was the message's, not the connection's
        await transport.check()
        await transport.publish([message("other")])


async def test_an_undecodable_message_is_delivered_and_dead_lettered_on_nack(
    transport: RabbitMQTransport, rabbit_url: str
) -> None:
    topology = transport.topology
    garbage = b"\x00 this is not a TaskFlow message"
    connection, channel = await raw_channel(rabbit_url)
    try:
        # Given bytes some other program published to the jobs exchange
        await channel.basic_publish(garbage, exchange=topology.jobs_exchange, routing_key="work")

        async with transport.consume(["work"], prefetch=1) as deliveries:
            delivery = await receive(deliveries)
            assert delivery.body == garbage
            with pytest.raises(DecodeError):
                decode(delivery.body)
            # When the consumer rejects it
            await transport.nack([delivery.tag], requeue=False)
            await assert_nothing_arrives(deliveries)

        # Then it lies in the dead-letter queue, with the queue it died in
        with anyio.fail_after(WAIT):
            while True:
                dead = await channel.basic_get(topology.dead_queue, no_ack=True)
                if dead.delivery_tag is not None:
                    break
                await anyio.sleep(0.05)
        assert dead.body == garbage
        headers = dead.header.properties.headers or {}
        deaths = headers.get("x-death")
        assert isinstance(deaths, list)
        assert deaths[0]["queue"] == topology.queue("work")
        assert deaths[0]["reason"] == "rejected"
    finally:
        await connection.close()


# ------------------------------------------------------------------ consuming


async def test_prefetch_bounds_what_the_broker_delivers(
    transport: RabbitMQTransport, rabbit_url: str
) -> None:
    await transport.publish([message(job_id=f"m{n}") for n in range(20)])

    async with transport.consume(["work"], prefetch=5) as deliveries:
        held = [await receive(deliveries) for _ in range(5)]
        with pytest.raises(anyio.WouldBlock):
            deliveries.receive_nowait()
        await anyio.sleep(QUIET)
        # the broker keeps the rest: only prefetch messages were sent to this consumer
        assert await ready_count(rabbit_url, transport.topology.queue("work")) == 15

        await transport.ack([d.tag for d in held[:2]])
        more = [await receive(deliveries) for _ in range(2)]
        with pytest.raises(anyio.WouldBlock):
            deliveries.receive_nowait()
        await transport.ack([d.tag for d in held[2:] + more])


async def test_prefetch_bounds_the_total_over_several_queues(
    transport: RabbitMQTransport,
) -> None:
    await transport.publish([message("a") for _ in range(5)] + [message("b") for _ in range(5)])

    async with transport.consume(["a", "b"], prefetch=3) as deliveries:
        held = [await receive(deliveries) for _ in range(3)]
        await anyio.sleep(QUIET)  # both queues had time to deliver their share
        with pytest.raises(anyio.WouldBlock):
            deliveries.receive_nowait()

        await transport.ack([held[0].tag])
        held = [*held[1:], await receive(deliveries)]
        with pytest.raises(anyio.WouldBlock):
            deliveries.receive_nowait()

        # acking out of order (no contiguous prefix) is fine too
        await transport.ack([held[2].tag, held[0].tag])
        rest = [await receive(deliveries) for _ in range(2)]
        await transport.ack([held[1].tag, *(d.tag for d in rest)])
        left = []
        with anyio.fail_after(WAIT):
            while len(left) < 4:
                delivery = await deliveries.receive()
                left.append(delivery)
                await transport.ack([delivery.tag])
        await assert_nothing_arrives(deliveries)
    assert transport.statistics().acked == 10


async def test_a_failing_delivery_callback_nacks_instead_of_stalling(
    transport: RabbitMQTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _Consumer._deliver
    calls = 0

    def flaky(self: _Consumer, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_Consumer, "_deliver", flaky)
    await transport.publish([message(job_id="only")])

    async with transport.consume(["work"], prefetch=1) as deliveries:
        delivery = await receive(deliveries)
        assert (job_id(delivery), delivery.redelivered) == ("only", True)
        await transport.ack([delivery.tag])
    assert calls == 2


# ------------------------------------------------------------------ connection loss


async def test_consumption_survives_a_lost_connection(rabbit_vhost: Vhost) -> None:
    async with open_test_transport(
        rabbit_vhost.url, queues=["work"], cleanup=False, pack=1
    ) as transport:
        sent = [message(job_id=f"m{n:02}") for n in range(30)]
        await transport.publish(sent)
        acked: Counter[str] = Counter()

        async with transport.consume(["work"], prefetch=10) as deliveries:
            # Given ten deliveries: five acked, five held unacked
            first = [await receive(deliveries) for _ in range(10)]
            await transport.ack([d.tag for d in first[:5]])
            acked.update(job_id(d) for d in first[:5])
            held = first[5:]
            await anyio.sleep(QUIET)  # the acks reached the broker

            # When the broker closes the connection mid-consume
            old = live_session(transport.connection)
            await rabbit_vhost.close_connections("test: connection lost")
            await reconnected(transport.connection, old)

            # Then acking the held (stale) tags is a no-op that does not break the new channel
            await transport.ack([d.tag for d in held])
            assert transport.statistics().stale_settles == 5

            # and every message not acked before comes (again), the held ones redelivered
            got: list[Delivery] = []
            with anyio.fail_after(WAIT):
                while len(got) < 25:
                    delivery = await deliveries.receive()
                    got.append(delivery)
                    await transport.ack([delivery.tag])
            acked.update(job_id(d) for d in got)
            await assert_nothing_arrives(deliveries)

        redelivered = {job_id(d) for d in got if d.redelivered}
        assert {job_id(d) for d in held} <= redelivered
        # every message was consumed and acked exactly once
        assert acked == Counter(m.job_id for m in sent)
        assert await ready_count(rabbit_vhost.url, transport.topology.queue("work")) == 0
        stats = transport.statistics()
        assert (stats.reconnects, stats.connected) == (1, True)
        await transport.check()


async def test_check_and_publish_fail_while_disconnected_and_recover(
    rabbit_vhost: Vhost,
) -> None:
    async with open_test_transport(
        rabbit_vhost.url, queues=["work"], cleanup=False, backoff=QUICK
    ) as transport:
        await transport.check()
        async with transport.consume(["work"], prefetch=5) as deliveries:
            # Given a broker that refuses to let the transport back in
            old = live_session(transport.connection)
            await rabbit_vhost.deny()
            await rabbit_vhost.close_connections("test: outage")
            await lost(old)

            # Then it reports the outage; publish fails (after a short wait for a reconnect)
            with pytest.raises(TransportError, match="not connected"):
                await transport.check()
            with pytest.raises(TransportError, match="not connected"):
                await transport.publish([message()])
            # and a waiting consumer just waits
            with pytest.raises(anyio.WouldBlock):
                deliveries.receive_nowait()

            # When the broker lets it in again, it recovers by itself
            await rabbit_vhost.allow()
            await reconnected(transport.connection, old)
            await transport.check()
            stats = transport.connection.statistics()
            assert stats.failed_attempts >= 1
            assert stats.reconnects == 1

            # and the consumer resumed on the new connection
            await transport.publish([message(job_id="after")])
            delivery = await receive(deliveries)
            assert job_id(delivery) == "after"
            await transport.ack([delivery.tag])


# ------------------------------------------------------------------ quorum queues


async def test_quorum_queues_work_without_priorities(rabbit_url: str) -> None:
    async with open_test_transport(rabbit_url, queues=["work"], quorum=True) as transport:
        sent = [message(priority=p, job_id=f"p{p}") for p in (0, 9, 5)]
        await transport.publish(sent)
        async with transport.consume(["work"], prefetch=3) as deliveries:
            got = [await receive(deliveries) for _ in range(3)]
            await transport.nack([got[0].tag], requeue=False)  # dead-letters on quorum too
            await transport.ack([d.tag for d in got[1:]])
        # quorum queues on RabbitMQ 3.x ignore priorities: first in, first out
        assert [job_id(d) for d in got] == ["p0", "p9", "p5"]


# ------------------------------------------------------------------ event bus


async def test_an_event_reaches_a_subscriber_on_another_connection(rabbit_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    async with (
        open_test_event_bus(rabbit_url, prefix=prefix) as here,
        open_test_event_bus(rabbit_url, prefix=prefix) as there,
    ):
        assert here.connection is not there.connection
        event = JobSucceeded(
            job_id="j-1", task="echo", attempt=1, at=3.0, started_at=2.0, created_at=1.0
        )
        async with there.subscribe() as remote, here.subscribe() as local:
            await here.publish([event])
            with anyio.fail_after(WAIT):
                assert await remote.receive() == event
                # the publishing process's own subscribers get it through the broker too
                assert await local.receive() == event
        assert here.published == 1
        assert there.received == 1


async def test_events_are_routed_by_type_and_job_id(rabbit_url: str) -> None:
    submitted = JobSubmitted(job_id="j-7", task="echo", queue="default", at=1.0)
    started = JobStarted(job_id="j-7", task="echo", attempt=1, at=2.0, queued_at=1.0)
    assert routing_key(submitted) == "job_submitted.j-7"
    assert routing_key(started) == "job_started.j-7"

    async with open_test_event_bus(rabbit_url) as bus:
        connection, channel = await raw_channel(rabbit_url)
        try:
            declared = await channel.queue_declare("", exclusive=True)
            assert declared.queue is not None
            await channel.queue_bind(
                declared.queue, bus.topology.events_exchange, routing_key="job_started.*"
            )
            await bus.publish([submitted, started])
            with anyio.fail_after(WAIT):
                while True:
                    got = await channel.basic_get(declared.queue, no_ack=True)
                    if got.delivery_tag is not None:
                        break
                    await anyio.sleep(0.05)
            assert got.routing_key == "job_started.j-7"
            assert got.body == encode(started)
            assert got.header.properties.delivery_mode == 1  # notifications: not persistent
        finally:
            await connection.close()


async def test_a_burst_of_events_travels_as_few_messages_and_arrives_whole_and_in_order(
    rabbit_url: str,
) -> None:
    """300 events in one publish (a submitted batch, interleaved with another type) cross
    the wire as one message per type, and a subscriber gets every one, each job's events in
    the order published; a subscriber of one type gets only that type's events, in order."""
    burst: list[Event] = []
    for i in range(100):
        burst.append(JobSubmitted(job_id=f"b{i}", task="echo", queue="default", at=1.0))
    for i in range(100):
        burst.append(JobStarted(job_id=f"b{i}", task="echo", attempt=1, at=2.0, queued_at=1.0))
    for i in range(100, 200):
        burst.append(JobSubmitted(job_id=f"b{i}", task="echo", queue="default", at=1.0))
    async with (
        open_test_event_bus(rabbit_url) as bus,
        bus.subscribe(buffer=1000) as everything,
        bus.subscribe(buffer=1000, kinds=[JobStarted]) as started,
    ):
        await bus.publish(burst)
        with anyio.fail_after(WAIT):
            got = [await everything.receive() for _ in burst]
            only_started = [await started.receive() for _ in range(100)]
        assert sorted(map(repr, got)) == sorted(map(repr, burst))  # each one, once
        for job in {e.job_id for e in burst}:  # submitted before started, for every job
            assert [e for e in got if e.job_id == job] == [e for e in burst if e.job_id == job]
        assert got[:200] == [e for e in burst if isinstance(e, JobSubmitted)]  # one run per type
        assert only_started == [e for e in burst if isinstance(e, JobStarted)]
        stats = bus.statistics()
        assert stats.sent == 300
        assert stats.messages <= 4, stats  # 2 runs, however the sender's wakeups split them


async def test_the_event_bus_drops_while_disconnected_and_resubscribes(
    rabbit_vhost: Vhost,
) -> None:
    async with (
        open_test_event_bus(rabbit_vhost.url, cleanup=False, backoff=QUICK) as bus,
        bus.subscribe() as events,
    ):
        old = live_session(bus.connection)
        await rabbit_vhost.deny()
        await rabbit_vhost.close_connections("test: outage")
        await lost(old)

        # While disconnected, publish returns at once and counts what it dropped
        with anyio.fail_after(1):
            await bus.publish([JobSubmitted(job_id="lost", task="t", queue="q", at=0.0)])
        assert bus.dropped == 1

        # After the reconnect the subscriber is bound again and gets new events
        await rabbit_vhost.allow()
        await reconnected(bus.connection, old)
        kept = JobSubmitted(job_id="kept", task="t", queue="q", at=1.0)
        await bus.publish([kept])
        with anyio.fail_after(WAIT):
            assert await events.receive() == kept
        assert bus.statistics().reconnects == 1


# ------------------------------------------------------------------ no broker


async def test_an_unreachable_broker_fails_to_open_with_a_transport_error() -> None:
    started = time.perf_counter()
    with pytest.raises(TransportError, match="cannot connect to RabbitMQ"):
        async with open_rabbitmq_transport("amqp://guest:secret@127.0.0.1:1/", connect_timeout=0.5):
            pytest.fail("opened a transport without a broker")
    # it retried with backoff for about connect_timeout, not forever
    assert time.perf_counter() - started < 5.0


async def test_an_error_in_the_block_comes_out_as_itself(rabbit_url: str) -> None:
    # The connection's background task runs in a task group around the block; the block's
    # own error must not come out wrapped in an ExceptionGroup.
    with pytest.raises(LookupError, match="mine"):
        async with open_test_transport(rabbit_url), open_test_event_bus(rabbit_url):
            raise LookupError("mine")


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    backoff = RECONNECT  # 0.1 s doubling to 2 s, each less a random share of up to half
    rng = random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(12)]
    for n, delay in enumerate(delays):
        base = min(2.0, 0.1 * 2**n)
        assert base / 2 <= delay <= base
    assert len(set(delays)) == len(delays)  # jittered
    assert Backoff(base=0.1, cap=2.0).delay(100) == 2.0


async def test_concurrent_settlements_never_break_the_channel(
    transport: RabbitMQTransport,
) -> None:
    # Given many deliveries settled by several tasks at once, in batches, out of order,
    # some with multiple=True prefixes and some one by one, acks mixed with requeues
    sent = [message(job_id=f"m{n}") for n in range(3000)]
    await transport.publish(sent)
    rng = random.Random(3)
    done: Counter[str] = Counter()
    generation = transport.connection.generation

    async with transport.consume(["work"], prefetch=300) as deliveries:

        async def settler() -> None:
            while sum(done.values()) < len(sent):
                with anyio.move_on_after(QUIET):
                    batch = await receive_batch(deliveries, rng.randint(1, 40))
                    rng.shuffle(batch)
                    requeue = [d for d in batch if rng.random() < 0.05 and not d.redelivered]
                    keep = [d for d in batch if d not in requeue]
                    if requeue:
                        await transport.nack([d.tag for d in requeue], requeue=True)
                    await transport.ack([d.tag for d in keep])
                    done.update(job_id(d) for d in keep)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(settler)

    # Then every message was acked exactly once, on the one channel, which never closed
    assert done == Counter(m.job_id for m in sent)
    assert transport.connection.generation == generation
    assert transport.statistics().reconnects == 0


# ------------------------------------------------------------------ packed batches


async def test_a_batch_travels_as_few_messages_and_is_delivered_one_reference_each(
    packed: RabbitMQTransport, rabbit_url: str
) -> None:
    # Given 100 references to one queue (two priorities) published in one call
    sent = [message(job_id=f"m{n:03}", priority=n % 2) for n in range(100)]
    await packed.publish(sent)

    # Then they wait as 4 broker messages (50 per priority: 32 + 18 each)
    assert await ready_count(rabbit_url, packed.topology.queue("work")) == 4
    assert packed.statistics().published == 100

    # and come out one delivery per reference, priority 1 first, in order within each
    async with packed.consume(["work"], prefetch=100) as deliveries:
        got = [await receive(deliveries) for _ in range(100)]
        assert [job_id(d) for d in got] == [m.job_id for m in sent[1::2] + sent[::2]]
        assert len({d.tag for d in got}) == 100
        # a message is acked once every reference it carried is
        await packed.ack([d.tag for d in got[:40]])
        await anyio.sleep(QUIET)
        assert packed.statistics().acked == 1  # the first 32 only
        await packed.ack([d.tag for d in got[40:]])
        await assert_nothing_arrives(deliveries)
    assert packed.statistics().acked == 4
    assert await ready_count(rabbit_url, packed.topology.queue("work")) == 0


async def test_an_undecodable_packed_message_is_delivered_whole_for_the_dispatcher_to_reject(
    packed: RabbitMQTransport, rabbit_url: str
) -> None:
    connection, channel = await raw_channel(rabbit_url)
    try:
        await channel.basic_publish(
            b"[not json",
            exchange=packed.topology.jobs_exchange,
            routing_key="work",
            properties=spec.Basic.Properties(message_type="JobMessages"),
        )
    finally:
        await connection.close()
    async with packed.consume(["work"], prefetch=5) as deliveries:
        delivery = await receive(deliveries)
        assert delivery.body == b"[not json"
        await packed.nack([delivery.tag], requeue=False)
        await assert_nothing_arrives(deliveries)


async def test_a_lost_connection_redelivers_every_packed_reference_not_acked(
    rabbit_vhost: Vhost,
) -> None:
    async with open_test_transport(rabbit_vhost.url, queues=["work"], cleanup=False) as transport:
        sent = [message(job_id=f"m{n:02}") for n in range(40)]  # messages of 32 and 8
        await transport.publish(sent)
        async with transport.consume(["work"], prefetch=40) as deliveries:
            first = [await receive(deliveries) for _ in range(40)]
            await transport.ack([d.tag for d in first[32:]])  # the second message, whole
            await transport.ack([d.tag for d in first[:31]])  # all but one of the first
            await anyio.sleep(QUIET)
            old = live_session(transport.connection)
            await rabbit_vhost.close_connections("test: connection lost")
            await reconnected(transport.connection, old)
            # the first message comes back whole, the acked second one does not
            again = [await receive(deliveries) for _ in range(32)]
            assert [job_id(d) for d in again] == [m.job_id for m in sent[:32]]
            assert all(d.redelivered for d in again)
            await transport.ack([d.tag for d in again])
            await assert_nothing_arrives(deliveries)


async def test_concurrent_settlements_of_packed_references_lose_nothing(
    packed: RabbitMQTransport,
) -> None:
    # Given 3,000 references in messages of 32, settled by six tasks at once, in batches, out
    # of order, acks mixed with requeues
    sent = [message(job_id=f"m{n}") for n in range(3000)]
    await packed.publish(sent)
    rng = random.Random(5)
    done: set[str] = set()
    generation = packed.connection.generation

    async with packed.consume(["work"], prefetch=20) as deliveries:

        async def settler() -> None:
            while len(done) < len(sent):
                with anyio.move_on_after(QUIET):
                    batch = await receive_batch(deliveries, rng.randint(1, 40))
                    rng.shuffle(batch)
                    requeue = [d for d in batch if rng.random() < 0.01 and not d.redelivered]
                    keep = [d for d in batch if d not in requeue]
                    if requeue:
                        await packed.nack([d.tag for d in requeue], requeue=True)
                    await packed.ack([d.tag for d in keep])
                    done.update(job_id(d) for d in keep)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(settler)
        await assert_nothing_arrives(deliveries)

    # Then every reference was acked (a requeue brings its siblings back: at least once), on
    # the one channel, which never closed, and the queue is empty
    assert done == {m.job_id for m in sent}
    assert packed.connection.generation == generation
    stats = packed.statistics()
    assert stats.nacked > 0 and stats.acked + stats.nacked >= 3000 // 32


# ------------------------------------------------------------------ one subscription per process


async def test_many_subscribers_share_one_broker_queue_each_with_its_own_buffer(
    rabbit_vhost: Vhost,
) -> None:
    from tests.rabbit import arabbitmqctl

    async def queues() -> list[str]:
        out = await arabbitmqctl(
            "list_queues", "-p", rabbit_vhost.name, "--no-table-headers", "name"
        )
        return [line.strip() for line in out.splitlines() if line.strip()]

    def submitted(n: int) -> JobSubmitted:
        return JobSubmitted(job_id=f"s{n}", task="echo", queue="default", at=1.0)

    async def take(stream: Any, n: int) -> list[Event]:
        return [await stream.receive() for _ in range(n)]

    started = JobStarted(job_id="j", task="t", attempt=1, at=1.0, queued_at=0.0)
    async with open_test_event_bus(rabbit_vhost.url) as bus, AsyncExitStack() as stack:
        everything = [await stack.enter_async_context(bus.subscribe(buffer=64)) for _ in range(5)]
        only_submitted = [
            await stack.enter_async_context(bus.subscribe(buffer=64, kinds=[JobSubmitted]))
            for _ in range(5)
        ]
        tiny = await stack.enter_async_context(bus.subscribe(buffer=1))
        assert len(await queues()) == 1  # eleven listeners, one broker subscription
        assert bus.statistics().broker_queues == 1
        await bus.publish([submitted(0), started, submitted(1)])
        with anyio.fail_after(10):
            for stream in everything:
                # regrouped by type (two messages); each job's events keep their order
                assert await take(stream, 3) == [submitted(0), submitted(1), started]
            for stream in only_submitted:
                assert await take(stream, 2) == [submitted(0), submitted(1)]
            while sum(bus.statistics().subscriber_drops) < 2:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert bus.statistics().subscriber_drops == (0,) * 10 + (2,)
        assert tiny.receive_nowait() == submitted(0)
