"""RabbitMQEventBus: the EventBus port over a RabbitMQ topic exchange (asyncio backend only).

Every event goes to the ``<prefix>.events`` topic exchange with the routing key
``<event type in snake_case>.<job_id>`` (``job_succeeded.<id>``; ``<type>.none`` without a
job id), non-persistent and unconfirmed; a run of events of one type sent together travels
as one message (a JSON array) keyed ``<type>.batch``, so subscribers bind by type only.
Every subscriber, in this process or another, gets events the same way: an exclusive,
auto-delete, server-named queue bound with ``#`` (or ``<type>.*`` per type asked for),
consumed without acks into a bounded memory stream. There is no local shortcut, so the order and the
losses are the same for all.

Nothing blocks a publisher: ``publish`` puts events into a bounded outbox that one task sends;
a full outbox or a lost connection drops the events (counted in ``dropped``), as does a full
subscriber buffer. Events are notifications; the store is the truth. A subscriber's queue dies
with its connection; after a reconnect it is declared and bound again (events in between are
missed).
"""

from __future__ import annotations

import re
import typing
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiormq.abc
import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pamqp import commands as spec

from taskflow.backoff import Backoff
from taskflow.codec import DecodeError, decode_many, encode, encode_many
from taskflow.log import get_logger
from taskflow.messages import Event
from taskflow.rabbitmq.connection import (
    DRIVER_ERRORS,
    RabbitMQConnection,
    Session,
    describe,
    running,
)
from taskflow.rabbitmq.topology import Topology
from taskflow.streams import receive_batch

log = get_logger("taskflow.rabbitmq.events")

EVENT_TYPES: tuple[type, ...] = typing.get_args(Event)


def kind_key(kind: type) -> str:
    """``JobSucceeded`` -> ``job_succeeded``: the first word of an event's routing key."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).lower()


def _runs_of_one_kind(events: Sequence[Event]) -> list[list[Event]]:
    """Split ``events`` into consecutive runs of one type (order kept across runs)."""
    runs: list[list[Event]] = []
    for event in events:
        if runs and type(runs[-1][0]) is type(event):
            runs[-1].append(event)
        else:
            runs.append([event])
    return runs


def routing_key(event: Event) -> str:
    """``job_succeeded.<job_id>``; ``<type>.none`` for an event without a job id."""
    job_id = getattr(event, "job_id", None) or "none"
    return f"{kind_key(type(event))}.{job_id}"[:255]


@dataclass(frozen=True, slots=True, kw_only=True)
class RabbitMQEventBusStats:
    connected: bool
    generation: int
    reconnects: int
    published: int
    sent: int
    received: int
    dropped: int
    malformed: int
    subscribers: int
    messages: int
    """AMQP messages sent: a run of events of one type goes as one."""


class _Subscriber:
    def __init__(self, send: MemoryObjectSendStream[Event], bindings: tuple[str, ...]) -> None:
        self.send = send
        self.bindings = bindings
        self.session: Session | None = None
        self.queue: str | None = None
        self.consumer_tag: str | None = None
        self.closed = False


class RabbitMQEventBus:
    """Implements ``EventBus`` over a ``RabbitMQConnection`` (a session channel without
    publisher confirms). Open it with ``open_rabbitmq_event_bus``; ``run`` is its sender task.

    Counters: ``published`` (accepted by ``publish``), ``sent`` (handed to the broker),
    ``received`` (put into a subscriber's stream), ``dropped`` (lost: outbox full,
    disconnected, send failed, or a subscriber's buffer full), ``malformed`` (undecodable)."""

    def __init__(
        self, connection: RabbitMQConnection, *, prefix: str = "taskflow", outbox: int = 4096
    ) -> None:
        self.connection = connection
        self.topology = Topology(prefix=prefix)
        self.published = 0
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.malformed = 0
        self.messages = 0
        self._outbox_send, self._outbox_receive = anyio.create_memory_object_stream[Event](outbox)
        self._accepted = 0
        self._processed = 0
        self._progress: anyio.Event | None = None
        self._subscribers: list[_Subscriber] = []
        self._current: Session | None = None
        self._attach_lock = anyio.Lock()
        connection.on_connect(self._on_connect)

    # ------------------------------------------------------------ port

    async def publish(self, events: Sequence[Event]) -> None:
        self.publish_nowait(events)
        await anyio.lowlevel.checkpoint()

    def publish_nowait(self, events: Sequence[Event]) -> None:
        connected = self.connection.connected
        for event in events:
            if not connected:
                self.dropped += 1
                continue
            try:
                self._outbox_send.send_nowait(event)
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.dropped += 1
                continue
            self.published += 1
            self._accepted += 1

    @asynccontextmanager
    async def subscribe(
        self, *, buffer: int = 256, kinds: Collection[type[Event]] | None = None
    ) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](buffer)
        bindings = ("#",) if kinds is None else tuple(f"{kind_key(k)}.*" for k in kinds)
        subscriber = _Subscriber(send, bindings)
        # Events published before this call go out before the binding exists (same channel).
        await self._flushed()
        async with self._attach_lock:
            self._subscribers.append(subscriber)
            session = self._current
            if session is not None and session.usable:
                try:
                    await self._attach(subscriber, session)
                except DRIVER_ERRORS as exc:
                    log.warning("subscriber_attach_deferred", error=describe(exc))
        try:
            async with receive:
                yield receive
        finally:
            subscriber.closed = True
            send.close()
            self._subscribers.remove(subscriber)
            await self._detach(subscriber)

    # ------------------------------------------------------------ sender

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Send what ``publish`` accepted, in order, until cancelled: what is waiting is sent
        as one AMQP message per run of events of one kind (``<kind>.batch``), so a burst of
        hundreds of events costs a few messages, not hundreds."""
        exchange = self.topology.events_exchange
        properties = spec.Basic.Properties(delivery_mode=1, content_type="application/json")
        task_status.started()
        async with self._outbox_receive:
            while True:
                try:
                    waiting = await receive_batch(self._outbox_receive, 1024)
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
                for run in _runs_of_one_kind(waiting):
                    session = self.connection.session
                    try:
                        if session is None:
                            raise ConnectionError("not connected")
                        if len(run) == 1:
                            body, key = encode(run[0]), routing_key(run[0])
                        else:
                            body, key = encode_many(run), f"{kind_key(type(run[0]))}.batch"
                        with anyio.fail_after(self.connection.timeout):
                            await session.channel.basic_publish(
                                body,
                                exchange=exchange,
                                routing_key=key,
                                properties=properties,
                                wait=False,
                            )
                        self.sent += len(run)
                        self.messages += 1
                    except Exception as exc:
                        self.dropped += len(run)
                        log.warning("event_dropped", events=len(run), reason=describe(exc))
                    finally:
                        self._processed += len(run)
                        if self._progress is not None:
                            self._progress.set()
                            self._progress = None

    def close(self) -> None:
        """Refuse further events (they count as dropped) and release the outbox."""
        self._outbox_send.close()
        self._outbox_receive.close()

    # ------------------------------------------------------------ inspection

    def statistics(self) -> RabbitMQEventBusStats:
        conn = self.connection.statistics()
        return RabbitMQEventBusStats(
            connected=conn.connected,
            generation=conn.generation,
            reconnects=conn.reconnects,
            published=self.published,
            sent=self.sent,
            received=self.received,
            dropped=self.dropped,
            malformed=self.malformed,
            subscribers=len(self._subscribers),
            messages=self.messages,
        )

    # ------------------------------------------------------------ internals

    async def _flushed(self) -> None:
        """Wait (briefly) until the sender handled everything accepted so far."""
        target = self._accepted
        with anyio.move_on_after(self.connection.timeout):
            while self._processed < target:
                if self._progress is None:
                    self._progress = anyio.Event()
                await self._progress.wait()

    async def _on_connect(self, session: Session) -> None:
        async with self._attach_lock:
            self._current = session
            with anyio.fail_after(self.connection.timeout):
                await session.channel.exchange_declare(
                    self.topology.events_exchange, exchange_type="topic", durable=True
                )
            for subscriber in list(self._subscribers):
                await self._attach(subscriber, session)

    async def _attach(self, subscriber: _Subscriber, session: Session) -> None:
        if subscriber.closed or subscriber.session is session:
            return
        channel = session.channel
        with anyio.fail_after(self.connection.timeout):
            declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
            queue = declared.queue
            if queue is None:
                raise aiormq.exceptions.AMQPError("the broker named no queue")
            for binding in subscriber.bindings:  # only the kinds it asked for cross the wire
                await channel.queue_bind(queue, self.topology.events_exchange, routing_key=binding)
            ok = await channel.basic_consume(queue, self._callback(subscriber), no_ack=True)
        subscriber.session, subscriber.queue, subscriber.consumer_tag = (
            session,
            queue,
            ok.consumer_tag,
        )

    async def _detach(self, subscriber: _Subscriber) -> None:
        session, tag = subscriber.session, subscriber.consumer_tag
        subscriber.session = subscriber.consumer_tag = None
        if session is None or tag is None or not session.usable:
            return  # its exclusive queue went with the connection
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.connection.timeout):
            try:
                # The queue is auto-delete: cancelling its only consumer deletes it.
                await session.channel.basic_cancel(tag)
            except DRIVER_ERRORS as exc:
                log.debug("subscriber_cancel_failed", error=describe(exc))

    def _callback(self, subscriber: _Subscriber) -> Callable[[aiormq.abc.DeliveredMessage], Any]:
        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            # A task of its own (aiormq); never raise (no ack: nothing to stall, but count).
            try:
                self._deliver(subscriber, message.body)
            except Exception as exc:
                self.dropped += 1
                log.error("event_delivery_failed", error=describe(exc))

        return on_message

    def _deliver(self, subscriber: _Subscriber, body: bytes) -> None:
        if subscriber.closed:
            return
        try:
            events = decode_many(body)
        except DecodeError as exc:
            self.malformed += 1
            log.warning("event_malformed", reason=exc.message)
            return
        for event in events:
            if not isinstance(event, EVENT_TYPES):
                self.malformed += 1
                log.warning("event_malformed", reason=f"not an event: {type(event).__name__}")
                continue
            try:
                subscriber.send.send_nowait(event)  # type: ignore[arg-type]
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            else:
                self.received += 1


@asynccontextmanager
async def open_rabbitmq_event_bus(
    url: str,
    *,
    prefix: str = "taskflow",
    timeout: float = 10.0,
    connect_timeout: float = 15.0,
    backoff: Backoff | None = None,
    outbox: int = 4096,
) -> AsyncIterator[RabbitMQEventBus]:
    """Connect (retrying with backoff for up to ``connect_timeout``, then ``TransportError``),
    declare the events exchange, start the sender, yield the bus, close."""
    connection = RabbitMQConnection(
        url,
        name=f"{prefix}-events",
        publisher_confirms=False,
        timeout=timeout,
        connect_timeout=connect_timeout,
        backoff=backoff,
    )
    bus = RabbitMQEventBus(connection, prefix=prefix, outbox=outbox)
    try:
        async with running(connection, bus.run):
            yield bus
    finally:
        bus.close()
