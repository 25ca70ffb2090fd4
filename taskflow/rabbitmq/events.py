"""RabbitMQEventBus: the EventBus port over a RabbitMQ topic exchange (asyncio backend only).

Every event goes to the ``<prefix>.events`` topic exchange with the routing key
``<event type in snake_case>.<job_id>`` (``job_succeeded.<id>``; ``<type>.none`` without a
job id), non-persistent and unconfirmed; events of one type sent together travel as one
message (a JSON array) keyed ``<type>.batch``, so subscribers bind by type only. Each job's
events keep their order; events of different jobs may be regrouped by type.
Each process has one subscription, however many in-process listeners it has (metrics,
waiters, cancel control, streams to come): an exclusive, server-named queue, bound with
``#`` or with ``<type>.*`` for each type its listeners asked for, consumed without acks; each
delivery is decoded once and fanned out to every listener that wants it, each with its own
bounded buffer and drop counter. There is no local shortcut for events published in the
same process, so the order and the losses are the same for all.

Nothing blocks a publisher: ``publish`` puts events into a bounded outbox that one task sends;
a full outbox or a lost connection drops the events (counted in ``dropped``), as does a full
subscriber buffer. Events are notifications; the store is the truth. The queue dies with its
connection; after a reconnect it is declared and bound again (events in between are missed).
"""

from __future__ import annotations

import re
import typing
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

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
from taskflow.streams import receive_ready

log = get_logger("taskflow.rabbitmq.events")

EVENT_TYPES: tuple[type, ...] = typing.get_args(Event)


def kind_key(kind: type) -> str:
    """``JobSucceeded`` -> ``job_succeeded``: the first word of an event's routing key."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).lower()


def runs_of_one_kind(events: Sequence[Event]) -> list[list[Event]]:
    """Group ``events`` into as few runs of one type as keep each job's events in order.

    An event joins the latest run of its type unless a later run already holds an event of
    the same job (it would overtake it); then it starts a new run. So a burst of interleaved
    ``started``/``succeeded`` events of many jobs goes as two messages, and every job's
    events still arrive in the order they were published."""
    runs: list[list[Event]] = []
    latest: dict[type, int] = {}  # type -> index of its latest run
    last_of_job: dict[str, int] = {}  # job id -> index of the last run holding one of its events
    for event in events:
        kind, job = type(event), getattr(event, "job_id", None)
        index = latest.get(kind)
        if index is None or (job is not None and last_of_job.get(job, -1) > index):
            index = latest[kind] = len(runs)
            runs.append([])
        runs[index].append(event)
        if job is not None:
            last_of_job[job] = index
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
    broker_queues: int
    """Broker queues this process consumes events from: one, however many subscribers."""
    subscriber_drops: tuple[int, ...]
    """Events each live subscriber missed because its buffer was full."""


_FENCE = b"taskflow-subscriber-fence:"


class _Subscriber:
    """One in-process listener of the process's single broker subscription."""

    def __init__(self, send: MemoryObjectSendStream[Event], kinds: frozenset[type] | None) -> None:
        self.send = send
        self.kinds = kinds
        self.keys = ("#",) if kinds is None else tuple(sorted(f"{kind_key(k)}.*" for k in kinds))
        self.dropped = 0
        self.closed = False
        self.fence = uuid.uuid4().hex
        self.active = anyio.Event()
        """Set once the fence it sent through the queue came back: what the queue delivered
        before that was published before it subscribed, and is not for it."""

    def wants(self, event: Event) -> bool:
        return self.active.is_set() and (self.kinds is None or type(event) in self.kinds)


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
        self._queue: str | None = None
        self._bound: set[str] = set()
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
        subscriber = _Subscriber(send, None if kinds is None else frozenset(kinds))
        # Events published before this call go out before the binding exists (same channel).
        await self._flushed()
        async with self._attach_lock:
            self._subscribers.append(subscriber)
            session = self._current
            fenced = False
            if session is not None and session.usable:
                try:
                    await self._bind(session)
                    await self._send_fence(session, subscriber)
                    fenced = True
                except DRIVER_ERRORS as exc:
                    log.warning("subscriber_attach_deferred", error=describe(exc))
        if fenced:
            with anyio.move_on_after(self.connection.timeout):
                await subscriber.active.wait()
        subscriber.active.set()  # not connected (nothing in flight), or the fence was lost
        try:
            async with receive:
                yield receive
        finally:
            subscriber.closed = True
            send.close()
            self._subscribers.remove(subscriber)
            await self._unbind_unused()

    # ------------------------------------------------------------ sender

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Send what ``publish`` accepted, in order, until cancelled: what is waiting is sent
        as one AMQP message per run of events of one kind (``<kind>.batch``, see
        ``runs_of_one_kind``), so a burst of hundreds of events costs a few messages, not
        hundreds."""
        exchange = self.topology.events_exchange
        properties = spec.Basic.Properties(delivery_mode=1, content_type="application/json")
        task_status.started()
        async with self._outbox_receive:
            while True:
                try:
                    waiting = [await self._outbox_receive.receive()]
                    # One turn of the loop first: the tasks ready now (executors starting
                    # or finishing a batch) publish theirs, and all go in the same messages.
                    await anyio.lowlevel.checkpoint()
                    waiting += receive_ready(self._outbox_receive, 1024 - 1)
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
                runs = runs_of_one_kind(waiting)
                # One deadline for the burst (not one per message): a publish waits only
                # while the broker applies flow control, and then every one of them would.
                with anyio.move_on_after(self.connection.timeout) as deadline:
                    while runs:
                        await self._send_run(runs[0], exchange, properties)
                        del runs[0]
                if deadline.cancelled_caught:
                    for run in runs:
                        self._dropped_run(run, "timed out")

    async def _send_run(
        self, run: list[Event], exchange: str, properties: spec.Basic.Properties
    ) -> None:
        session = self.connection.session
        try:
            if session is None:
                raise ConnectionError("not connected")
            if len(run) == 1:
                body, key = encode(run[0]), routing_key(run[0])
            else:
                body, key = encode_many(run), f"{kind_key(type(run[0]))}.batch"
            await session.channel.basic_publish(
                body, exchange=exchange, routing_key=key, properties=properties, wait=False
            )
        except Exception as exc:
            self._dropped_run(run, describe(exc))
        else:
            self.sent += len(run)
            self.messages += 1
            self._processed_run(run)

    def _dropped_run(self, run: list[Event], reason: str) -> None:
        self.dropped += len(run)
        log.warning("event_dropped", events=len(run), reason=reason)
        self._processed_run(run)

    def _processed_run(self, run: list[Event]) -> None:
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
            broker_queues=0 if self._queue is None else 1,
            subscriber_drops=tuple(sub.dropped for sub in self._subscribers),
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
            self._queue, self._bound = None, set()  # the queue died with the old connection
            with anyio.fail_after(self.connection.timeout):
                await session.channel.exchange_declare(
                    self.topology.events_exchange, exchange_type="topic", durable=True
                )
            if self._subscribers:
                await self._bind(session)

    def _wanted(self) -> set[str]:
        """The routing keys the live subscribers need (``#`` covers every other one)."""
        keys = {key for s in self._subscribers if not s.closed for key in s.keys}
        return {"#"} if "#" in keys else keys

    async def _bind(self, session: Session) -> None:
        """The process's one queue (declared and consumed on first need, per connection),
        bound to every kind a subscriber asked for; only those cross the wire."""
        channel = session.channel
        with anyio.fail_after(self.connection.timeout):
            if self._queue is None:
                declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
                if declared.queue is None:
                    raise aiormq.exceptions.AMQPError("the broker named no queue")
                await channel.basic_consume(declared.queue, self._on_message, no_ack=True)
                self._queue = declared.queue
            for key in sorted(self._wanted() - self._bound):
                await channel.queue_bind(
                    self._queue, self.topology.events_exchange, routing_key=key
                )
                self._bound.add(key)

    async def _send_fence(self, session: Session, subscriber: _Subscriber) -> None:
        """Through the default exchange straight to our queue, behind everything this
        process published so far (one channel keeps the order)."""
        assert self._queue is not None
        with anyio.fail_after(self.connection.timeout):
            await session.channel.basic_publish(
                _FENCE + subscriber.fence.encode(), exchange="", routing_key=self._queue
            )

    async def _unbind_unused(self) -> None:
        """After a subscriber left: unbind the kinds nobody asks for any more (best effort)."""
        async with self._attach_lock:
            session, queue = self._current, self._queue
            if session is None or queue is None or not session.usable:
                return
            unused = self._bound - self._wanted()
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.connection.timeout):
                for key in sorted(unused):
                    try:
                        await session.channel.queue_unbind(
                            queue, self.topology.events_exchange, routing_key=key
                        )
                    except DRIVER_ERRORS as exc:
                        log.debug("event_unbind_failed", error=describe(exc))
                        return
                    self._bound.discard(key)

    async def _on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        # A task of its own (aiormq); never raise (no ack: nothing to stall, but count).
        try:
            self._deliver(message.body)
        except Exception as exc:
            self.dropped += 1
            log.error("event_delivery_failed", error=describe(exc))

    def _deliver(self, body: bytes) -> None:
        """Decode once, then fan out to every subscriber that wants each event."""
        if body.startswith(_FENCE):
            token = body[len(_FENCE) :].decode(errors="replace")
            for subscriber in self._subscribers:
                if subscriber.fence == token:
                    subscriber.active.set()
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
            for subscriber in list(self._subscribers):
                if subscriber.closed or not subscriber.wants(event):  # type: ignore[arg-type]
                    continue
                try:
                    subscriber.send.send_nowait(event)  # type: ignore[arg-type]
                except anyio.WouldBlock:
                    subscriber.dropped += 1
                    self.dropped += 1
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    continue
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
