"""RabbitMQTransport: the Transport port over RabbitMQ (aiormq; asyncio backend only).

Publishing: persistent messages to the ``<prefix>.jobs`` direct exchange (routing key = queue
name, ``mandatory``), publisher confirms pipelined: up to ``confirm_window`` (256)
publishes await their confirmation at once, a window shared by concurrent calls. ``publish`` returns only when the broker confirmed every message; a nack,
a return (unroutable) or a lost connection raises ``TransportError`` for the call, so the
caller's outbox publishes again (a duplicate is harmless: the claim lets one run).

Consuming: one channel per ``consume()``, ``basic_qos(prefetch)`` and manual acks. aiormq
runs each delivery's callback as a task of its own; the callback only appends to a bounded
buffer and wakes the receiver (it never blocks), and an error in it is logged and the message
nacked back to its queue, never left to stall. The broker bounds the buffer (prefetch per
queue); the receiver hands out at most ``prefetch`` unsettled deliveries in all.

Tags: a delivery's tag is synthetic, unique in this transport, and maps to (session, channel,
real delivery tag). When the connection is lost the broker requeues every unacked message of
its channels, so a tag from a lost session is stale: settling it is a no-op (logged), because
settling an old number on a new channel would close that channel. The message comes back
``redelivered``, and the dispatcher skips it if its job is already done. After a reconnect the
topology is declared again and every consumer resumes (qos, consume) on a new channel.

While disconnected: ``receive()`` waits, settling is a no-op, ``publish`` waits up to
``reconnect_wait`` (1 s) for a session and then raises ``TransportError``, and ``check()``
raises ``TransportError``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import aiormq
import aiormq.abc
import anyio
import anyio.lowlevel
import msgspec
from pamqp import commands as spec

from taskflow.backoff import Backoff
from taskflow.codec import encode, encode_many
from taskflow.errors import TransportError
from taskflow.log import get_logger
from taskflow.messages import JobMessage
from taskflow.ports.transport import Delivery
from taskflow.rabbitmq.connection import (
    DRIVER_ERRORS,
    RabbitMQConnection,
    Session,
    close_quietly,
    describe,
    running,
)
from taskflow.rabbitmq.topology import MAX_PRIORITY, Topology
from taskflow.streams import Notifier

log = get_logger("taskflow.rabbitmq.transport")

Settlement = Literal["ack", "nack"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RabbitMQTransportStats:
    connected: bool
    generation: int
    reconnects: int
    published: int
    publish_failures: int
    delivered: int
    acked: int
    nacked: int
    stale_settles: int
    consumers: int


@dataclass(slots=True)
class _Packed:
    """One broker message that carried ``size`` job references: it is settled once all of
    them are, as a requeue if any asked for one, rejected if all were, else acked."""

    size: int
    remaining: int
    requeue: bool = False
    rejected: int = 0

    def settle(self, kind: Settlement, requeue: bool) -> tuple[Settlement, bool] | None:
        """Count one reference settled; the message's own settlement once it is the last."""
        self.remaining -= 1
        if kind == "nack":
            if requeue:
                self.requeue = True
            else:
                self.rejected += 1
        if self.remaining:
            return None
        if self.requeue:
            return "nack", True
        if self.rejected == self.size:
            return "nack", False
        return "ack", False


@dataclass(slots=True, kw_only=True)
class _Tag:
    consumer: _Consumer
    session: Session
    channel: aiormq.abc.AbstractChannel
    delivery_tag: int
    packed: _Packed | None = None


_DEPTH_ERRORS: tuple[type[Exception], ...] = (TimeoutError, *DRIVER_ERRORS)

PACK = 32
"""Job references one broker message carries at most (``publish`` of a batch)."""
PACKED = "JobMessages"
"""The ``type`` property of a message that carries several references (``encode_many``)."""


def pack(messages: Sequence[JobMessage], size: int) -> list[list[JobMessage]]:
    """``messages`` in chunks of at most ``size`` that share a queue and a priority, in the
    order given within each (queue, priority)."""
    chunks: list[list[JobMessage]] = []
    open_: dict[tuple[str, int], list[JobMessage]] = {}
    for message in messages:
        key = (message.queue, message.priority)
        chunk = open_.get(key)
        if chunk is None or len(chunk) >= size:
            chunk = open_[key] = []
            chunks.append(chunk)
        chunk.append(message)
    return chunks


def _unpack(message: aiormq.abc.DeliveredMessage) -> list[bytes]:
    """The bodies a delivery carries: one per job reference of a packed message, else the
    body itself (something undecodable too: the dispatcher rejects it with its reason)."""
    body = message.body
    if message.header.properties.message_type != PACKED:
        return [body]
    try:
        items = _split(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return [body]
    return [bytes(item) for item in items] or [body]


_split = msgspec.json.Decoder(list[msgspec.Raw]).decode


class _Consumer:
    """What ``consume`` yields; implements ``Deliveries``."""

    def __init__(self, transport: RabbitMQTransport, queues: Sequence[str], prefetch: int) -> None:
        self._transport = transport
        self.queues = tuple(dict.fromkeys(queues))
        self.prefetch = prefetch
        self.closed = False
        self.session: Session | None = None
        self.channel: aiormq.abc.AbstractChannel | None = None
        self.outstanding: set[int] = set()
        """Real delivery tags on ``channel`` not settled yet (buffered or handed out)."""
        self._capacity = prefetch * max(1, len(self.queues)) * transport.pack
        self._buffer: deque[Delivery] = deque()
        self._handed: set[int] = set()
        self._consumer_tags: list[str] = []
        self._unwatch: Callable[[], None] | None = None
        self._changed = Notifier()
        self._settling = anyio.Lock()
        """One settlement at a time per consumer: a ``multiple=True`` frame must never cover
        a tag that another task's frame, sent later, settles again (that closes the channel)."""

    # ------------------------------------------------------------ Deliveries

    def receive_nowait(self) -> Delivery:
        if self.closed:
            raise anyio.EndOfStream
        if len(self._handed) >= self.prefetch:
            raise anyio.WouldBlock
        while self._buffer:
            delivery = self._buffer.popleft()
            entry = self._transport._tags.get(delivery.tag)
            if entry is None or not self.is_live(entry):
                continue  # from a lost channel: the broker requeued it already
            self._handed.add(delivery.tag)
            return delivery
        raise anyio.WouldBlock

    async def receive(self) -> Delivery:
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                await self._changed.wait()

    # ------------------------------------------------------------ lifecycle

    def is_live(self, entry: _Tag) -> bool:
        return (
            entry.channel is self.channel
            and entry.session is self.session
            and not entry.session.lost.is_set()
            and not entry.channel.is_closed
        )

    def settled(self, tag: int) -> None:
        self._handed.discard(tag)
        self._changed.notify()

    async def attach(self, session: Session) -> None:
        """Consume on a new channel of ``session`` (the previous channel's deliveries were
        requeued by the broker with it)."""
        if self.closed or self.session is session:
            return
        transport = self._transport
        timeout = transport.connection.timeout
        self._reset()
        await transport._ensure_declared(session, self.queues)
        channel = await session.open_channel(timeout=timeout)
        self.session, self.channel = session, channel
        self._unwatch = session.watch(channel, "consumer channel")

        def cancelled(frame: spec.Basic.Cancel) -> None:
            # The queue was deleted under us: start over (declare, consume) on a new session.
            session.lose(f"consumer {frame.consumer_tag} cancelled by the broker")

        channel.on_consumer_cancel_callbacks.add(cancelled)
        with anyio.fail_after(timeout):
            await channel.basic_qos(prefetch_count=self.prefetch)
        for queue in self.queues:
            with anyio.fail_after(timeout):
                ok = await channel.basic_consume(
                    transport.topology.queue(queue),
                    self._callback(queue, session, channel),
                    no_ack=False,
                )
            if ok.consumer_tag is not None:
                self._consumer_tags.append(ok.consumer_tag)
        log.info(
            "consumer_attached",
            queues=list(self.queues),
            prefetch=self.prefetch,
            generation=session.generation,
        )

    async def close(self) -> None:
        """Stop consuming; the broker requeues every unsettled delivery with the channel."""
        self.closed = True
        self._changed.notify()
        channel, tags = self.channel, list(self._consumer_tags)
        self._reset()
        if channel is None or channel.is_closed:
            return
        timeout = self._transport.connection.timeout
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            try:
                for consumer_tag in tags:
                    await channel.basic_cancel(consumer_tag)
            except DRIVER_ERRORS as exc:
                log.debug("consumer_cancel_failed", error=describe(exc))
        await close_quietly(channel, timeout=timeout)

    def _reset(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        tags = self._transport._tags
        for delivery in self._buffer:
            tags.pop(delivery.tag, None)
        for tag in self._handed:
            tags.pop(tag, None)
        self._buffer.clear()
        self._handed.clear()
        self.outstanding.clear()
        self._consumer_tags.clear()
        self.session = self.channel = None
        self._changed.notify()

    # ------------------------------------------------------------ the aiormq callback

    def _callback(
        self, queue: str, session: Session, channel: aiormq.abc.AbstractChannel
    ) -> Callable[[aiormq.abc.DeliveredMessage], Any]:
        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            # A task of its own (aiormq); an exception here would only be logged by aiormq
            # and leave the message unacked until the channel closes: nack it instead.
            try:
                self._deliver(queue, session, channel, message)
            except Exception as exc:
                log.error("delivery_failed", queue=queue, error=describe(exc))
                tag = message.delivery_tag
                if tag is None or channel is not self.channel or channel.is_closed:
                    return
                self.outstanding.add(tag)  # settled like any other: never twice
                try:
                    await self.settle(channel, [tag], "nack", requeue=True)
                except TransportError as nack_exc:
                    log.warning("delivery_nack_failed", error=nack_exc.message)

        return on_message

    def _deliver(
        self,
        queue: str,
        session: Session,
        channel: aiormq.abc.AbstractChannel,
        message: aiormq.abc.DeliveredMessage,
    ) -> None:
        if self.closed or channel is not self.channel or session is not self.session:
            return  # a channel being closed: the broker requeues what it had delivered
        real = message.delivery_tag
        if real is None:
            raise ValueError("delivery without a delivery tag")
        if len(self._buffer) >= self._capacity:
            raise BufferError(f"more than {self._capacity} deliveries buffered")
        bodies = _unpack(message)
        packed = _Packed(size=len(bodies), remaining=len(bodies)) if len(bodies) > 1 else None
        redelivered = bool(message.redelivered)
        register, append = self._transport._register, self._buffer.append
        for body in bodies:
            tag = register(
                _Tag(
                    consumer=self,
                    session=session,
                    channel=channel,
                    delivery_tag=real,
                    packed=packed,
                )
            )
            append(Delivery(tag=tag, body=body, queue=queue, redelivered=redelivered))
        self.outstanding.add(real)
        self._changed.notify()

    # ------------------------------------------------------------ settling

    async def settle(
        self,
        channel: aiormq.abc.AbstractChannel,
        reals: list[int],
        kind: Settlement,
        *,
        requeue: bool,
    ) -> bool:
        """Ack or nack real tags of ``channel``; one frame with ``multiple=True`` when they
        are the oldest outstanding ones, else one frame each (pipelined). False if the
        channel closed meanwhile (the broker requeued them)."""
        ordered = sorted(reals)
        try:
            with anyio.fail_after(self._transport.connection.timeout):
                await self._settling.acquire()
        except TimeoutError as exc:
            raise TransportError(f"{kind} timed out") from exc
        try:
            prefix = sorted(self.outstanding)[: len(ordered)] == ordered
            self.outstanding.difference_update(ordered)
            frames = (
                [(ordered[-1], True)]
                if prefix and len(ordered) > 1
                else [(r, False) for r in ordered]
            )
            await self._send(channel, frames, kind, requeue=requeue)
        finally:
            self._settling.release()
        return not channel.is_closed

    async def _send(
        self,
        channel: aiormq.abc.AbstractChannel,
        frames: list[tuple[int, bool]],
        kind: Settlement,
        *,
        requeue: bool,
    ) -> None:
        try:
            with anyio.fail_after(self._transport.connection.timeout):
                for n, (tag, multiple) in enumerate(frames):
                    wait = n == len(frames) - 1
                    if kind == "ack":
                        await channel.basic_ack(tag, multiple=multiple, wait=wait)
                    else:
                        await channel.basic_nack(tag, multiple=multiple, requeue=requeue, wait=wait)
        except TimeoutError as exc:
            raise TransportError(f"{kind} timed out") from exc
        except DRIVER_ERRORS as exc:
            if channel.is_closed:
                # the broker requeued them with the channel: as good as a stale tag
                log.info("settle_on_closed_channel", kind=kind, count=len(frames))
                return
            raise TransportError(f"{kind} failed: {describe(exc)}") from exc


@dataclass(slots=True)
class _PublishRound:
    total: int
    confirmed: int = 0
    failures: list[str] = field(default_factory=list)
    first_error: BaseException | None = None

    def fail(self, reason: str, exc: BaseException | None = None) -> None:
        self.failures.append(reason)
        if self.first_error is None:
            self.first_error = exc


class RabbitMQTransport:
    """Implements ``Transport`` over a ``RabbitMQConnection`` (the constructor registers its
    ``on_connect`` callback there). Open both with ``open_rabbitmq_transport``.

    ``queues`` are declared at start and after every reconnect; any other queue is declared
    the first time it is published to or consumed from (and from then on also after
    reconnects), so a job for a queue no worker consumes yet waits in a durable queue rather
    than being unroutable. ``quorum=True`` declares quorum queues (replicated; no priorities
    on RabbitMQ 3.x, so messages come out in FIFO order whatever their priority).
    """

    def __init__(
        self,
        connection: RabbitMQConnection,
        *,
        queues: Iterable[str] = (),
        prefix: str = "taskflow",
        quorum: bool = False,
        confirm_window: int = 256,
        publish_timeout: float = 30.0,
        reconnect_wait: float = 1.0,
        pack: int = PACK,
    ) -> None:
        if confirm_window < 1:
            raise ValueError("confirm_window must be >= 1")
        if pack < 1:
            raise ValueError("pack must be >= 1")
        self.pack = pack
        self.connection = connection
        self.topology = Topology(prefix=prefix, quorum=quorum)
        self.confirm_window = confirm_window
        self.publish_timeout = publish_timeout
        self.reconnect_wait = reconnect_wait
        self._known: set[str] = set(queues)
        self._declared: set[str] = set()
        self._declared_in: Session | None = None
        self._current: Session | None = None
        self._consumers: list[_Consumer] = []
        self._tags: dict[int, _Tag] = {}
        self._next_tag = itertools.count(1)
        self._attach_lock = anyio.Lock()
        self._declare_lock = anyio.Lock()
        self._window = anyio.CapacityLimiter(confirm_window)
        self._stats = {
            "published": 0,
            "publish_failures": 0,
            "delivered": 0,
            "acked": 0,
            "nacked": 0,
            "stale_settles": 0,
        }
        connection.on_connect(self._on_connect)

    # ------------------------------------------------------------ port

    async def publish(self, messages: Sequence[JobMessage]) -> None:
        if not messages:
            await anyio.lowlevel.checkpoint()
            return
        session = await self._live_session()
        await self._ensure_declared(session, {m.queue for m in messages})
        chunks = pack(messages, self.pack)
        round_ = _PublishRound(total=len(chunks))
        pending = iter(chunks)
        channel = session.channel
        exchange = self.topology.jobs_exchange

        async def sender() -> None:
            # A sender holds one slot of the transport-wide window (shared by concurrent
            # calls) and keeps one publish awaiting its confirmation at a time.
            async with self._window:
                for chunk in pending:
                    await publish_one(chunk)

        async def publish_one(chunk: Sequence[JobMessage]) -> None:
            first = chunk[0]
            properties = spec.Basic.Properties(
                delivery_mode=2,
                priority=max(0, min(MAX_PRIORITY, first.priority)),
                content_type="application/json",
                message_type=PACKED if len(chunk) > 1 else "JobMessage",
            )
            try:
                confirmation = await channel.basic_publish(
                    encode_many(chunk) if len(chunk) > 1 else encode(first),
                    exchange=exchange,
                    routing_key=first.queue,
                    properties=properties,
                    mandatory=True,
                    wait=False,  # pipelined: the confirmation is what we wait for
                )
            except aiormq.exceptions.PublishError as exc:
                self._declared.discard(first.queue)  # deleted under us? declare again
                round_.fail(f"unroutable to queue {first.queue!r}", exc)
            except aiormq.exceptions.DeliveryError as exc:
                round_.fail("nacked by the broker", exc)
            except Exception as exc:  # the channel or connection went away, or worse
                round_.fail(describe(exc), exc)
            else:
                if isinstance(confirmation, spec.Basic.Ack):
                    round_.confirmed += 1
                    self._stats["published"] += len(chunk)
                else:
                    round_.fail(f"unexpected confirmation {confirmation!r}")

        async def senders(watcher: anyio.CancelScope) -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(min(self.confirm_window, len(chunks))):
                    tg.start_soon(sender)
            watcher.cancel()

        lost = False
        try:
            with anyio.fail_after(self.publish_timeout):
                async with anyio.create_task_group() as outer:
                    outer.start_soon(senders, outer.cancel_scope)
                    # A confirmation pending when the connection dies may never resolve
                    # (seen with aiormq): the session's loss ends the round at once.
                    await session.lost.wait()
                    lost = True
                    outer.cancel_scope.cancel()
        except TimeoutError as exc:
            self._stats["publish_failures"] += 1
            raise TransportError(
                f"publish timed out: {round_.confirmed} of {round_.total} confirmed"
            ) from exc
        if lost and round_.confirmed != round_.total:
            self._stats["publish_failures"] += 1
            raise TransportError(
                f"connection lost while publishing: {round_.confirmed} of {round_.total}"
                f" confirmed ({session.reason})"
            )
        if round_.confirmed != round_.total:
            # Also catches a sender that ended without a verdict (never a silent drop).
            self._stats["publish_failures"] += 1
            reason = round_.failures[0] if round_.failures else "no confirmation"
            raise TransportError(
                f"{round_.total - round_.confirmed} of {round_.total} messages not confirmed"
                f" ({reason})",
                failures=len(round_.failures),
            ) from round_.first_error

    @asynccontextmanager
    async def consume(self, queues: Sequence[str], *, prefetch: int) -> AsyncIterator[_Consumer]:
        if prefetch < 1:
            raise ValueError("prefetch must be >= 1")
        consumer = _Consumer(self, queues, prefetch)
        async with self._attach_lock:
            self._known.update(consumer.queues)
            self._consumers.append(consumer)
            session = self._current
            if session is not None and not session.lost.is_set():
                try:
                    await consumer.attach(session)
                except (*DRIVER_ERRORS, TransportError) as exc:  # type: ignore[misc]
                    if not session.lost.is_set():
                        self._consumers.remove(consumer)
                        await consumer.close()
                        raise TransportError(f"cannot consume: {describe(exc)}") from exc
                    # the session is gone: the next one attaches this consumer
                    log.warning("consumer_attach_deferred", error=describe(exc))
        try:
            yield consumer
        finally:
            self._consumers.remove(consumer)
            await consumer.close()

    async def ack(self, tags: Sequence[int]) -> None:
        await self._settle(tags, "ack", requeue=False)

    async def nack(self, tags: Sequence[int], *, requeue: bool) -> None:
        await self._settle(tags, "nack", requeue=requeue)

    async def check(self) -> None:
        await anyio.lowlevel.checkpoint()
        session = self.connection.session
        if session is None or not session.usable:
            last = self.connection.statistics().last_error
            raise TransportError("not connected to RabbitMQ" + (f" ({last})" if last else ""))

    async def depths(self, queues: Sequence[str]) -> dict[str, int]:
        session = await self._live_session()
        timeout = self.connection.timeout
        depths: dict[str, int] = {}
        try:
            await self._ensure_declared(session, queues)
            channel = await session.open_channel(timeout=timeout)
            try:
                for name in queues:
                    with anyio.fail_after(timeout):
                        ok = await channel.queue_declare(self.topology.queue(name), passive=True)
                    depths[name] = int(ok.message_count or 0)
            finally:
                await close_quietly(channel, timeout=timeout)
        except _DEPTH_ERRORS as exc:
            raise TransportError(f"cannot read the queue depths: {describe(exc)}") from exc
        return depths

    # ------------------------------------------------------------ inspection

    def statistics(self) -> RabbitMQTransportStats:
        conn = self.connection.statistics()
        return RabbitMQTransportStats(
            connected=conn.connected,
            generation=conn.generation,
            reconnects=conn.reconnects,
            consumers=len(self._consumers),
            **self._stats,
        )

    @property
    def queues(self) -> frozenset[str]:
        """Every queue name this transport declares (at start, after reconnects)."""
        return frozenset(self._known)

    # ------------------------------------------------------------ internals

    async def _live_session(self) -> Session:
        session = self.connection.session
        if session is None:
            with anyio.move_on_after(self.reconnect_wait):
                session = await self.connection.wait_connected()
        if session is None or not session.usable:
            raise TransportError("not connected to RabbitMQ")
        return session

    async def _on_connect(self, session: Session) -> None:
        """Declare the topology and resume every consumer, before the session is live."""
        async with self._attach_lock:
            self._current = session
            stale = len(self._tags)
            self._tags.clear()
            if stale:
                log.info("stale_tags_dropped", count=stale, generation=session.generation)
            timeout = self.connection.timeout
            channel = await session.open_channel(timeout=timeout)
            try:
                await self.topology.declare_base(channel, timeout=timeout)
                await self.topology.declare_queues(channel, sorted(self._known), timeout=timeout)
            finally:
                await close_quietly(channel, timeout=timeout)
            self._declared, self._declared_in = set(self._known), session
            for consumer in list(self._consumers):
                await consumer.attach(session)

    async def _ensure_declared(self, session: Session, names: Iterable[str]) -> None:
        wanted = set(names)
        if self._declared_in is session and wanted <= self._declared:
            return
        async with self._declare_lock:
            if self._declared_in is not session:
                self._declared, self._declared_in = set(), session
            missing = sorted(wanted - self._declared)
            if not missing:
                return
            timeout = self.connection.timeout
            try:
                channel = await session.open_channel(timeout=timeout)
                try:
                    await self.topology.declare_queues(channel, missing, timeout=timeout)
                finally:
                    await close_quietly(channel, timeout=timeout)
            except DRIVER_ERRORS as exc:
                raise TransportError(f"cannot declare queues {missing}: {describe(exc)}") from exc
            self._known.update(missing)
            self._declared.update(missing)

    def _register(self, entry: _Tag) -> int:
        tag = next(self._next_tag)
        self._tags[tag] = entry
        self._stats["delivered"] += 1
        return tag

    async def _settle(self, tags: Sequence[int], kind: Settlement, *, requeue: bool) -> None:
        groups: dict[
            tuple[int, Settlement, bool], tuple[_Consumer, aiormq.abc.AbstractChannel, list[int]]
        ] = {}
        ignored = 0
        for tag in tags:
            entry = self._tags.pop(tag, None)
            if entry is None:
                ignored += 1  # unknown, settled already, or from a lost session
                continue
            entry.consumer.settled(tag)
            if not entry.consumer.is_live(entry):
                ignored += 1
                continue
            how: tuple[Settlement, bool] | None = (kind, requeue)
            if entry.packed is not None:
                how = entry.packed.settle(kind, requeue)
            if how is None:
                continue  # its message waits for the other references it carried
            key = (id(entry.channel), how[0], how[1])
            group = groups.setdefault(key, (entry.consumer, entry.channel, []))
            group[2].append(entry.delivery_tag)
        if ignored:
            self._stats["stale_settles"] += ignored
            log.info("stale_settle_dropped", kind=kind, count=ignored)
        if not groups:
            await anyio.lowlevel.checkpoint()
            return
        for (_, how_kind, how_requeue), (consumer, channel, reals) in groups.items():
            if await consumer.settle(channel, reals, how_kind, requeue=how_requeue):
                self._stats["acked" if how_kind == "ack" else "nacked"] += len(reals)


@asynccontextmanager
async def open_rabbitmq_transport(
    url: str,
    *,
    queues: Iterable[str] = (),
    prefix: str = "taskflow",
    quorum: bool = False,
    timeout: float = 10.0,
    connect_timeout: float = 15.0,
    backoff: Backoff | None = None,
    confirm_window: int = 256,
    pack: int = PACK,
) -> AsyncIterator[RabbitMQTransport]:
    """Connect (retrying with backoff for up to ``connect_timeout``, then ``TransportError``),
    declare the topology, yield the transport, close. The connection is kept open in a task
    of its own and reopened whenever it is lost."""
    connection = RabbitMQConnection(
        url,
        name=f"{prefix}-transport",
        publisher_confirms=True,
        timeout=timeout,
        connect_timeout=connect_timeout,
        backoff=backoff,
    )
    transport = RabbitMQTransport(
        connection,
        queues=queues,
        prefix=prefix,
        quorum=quorum,
        confirm_window=confirm_window,
        pack=pack,
    )
    async with running(connection):
        yield transport
