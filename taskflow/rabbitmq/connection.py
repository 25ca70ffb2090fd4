"""A reconnecting AMQP connection over aiormq (asyncio backend only).

``RabbitMQConnection`` keeps one *session* open: an aiormq connection plus its default
channel. It connects with capped exponential backoff and jitter (0.1 s doubling to 2 s),
runs the callbacks the adapters registered with ``on_connect`` (topology, consumers) before
the session counts as live, then (``run``, a background task) waits until the connection or
any channel watched on it closes, and starts over. ``running()`` wraps connect, run and
close around a block; the adapters' ``open_*`` functions use it.
Every session gets a new ``generation``; whatever belonged to a lost session (channels,
delivery tags, exclusive queues) is gone with it, and adapters compare sessions by identity to
tell a stale tag from a live one.

Everything here runs under AnyIO's asyncio backend; every broker call sits under
``anyio.fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiormq
import aiormq.abc
import anyio
import sniffio
from anyio.abc import TaskStatus

from taskflow.backoff import Backoff
from taskflow.config import mask
from taskflow.errors import TransportError
from taskflow.log import get_logger

log = get_logger("taskflow.rabbitmq")

DRIVER_ERRORS: tuple[type[Exception], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
    RuntimeError,  # aiormq raises it for a channel requested on a closed connection
)
"""What aiormq and the socket underneath raise; adapters translate them into TransportError."""

OnConnect = Callable[["Session"], Awaitable[None]]


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


RECONNECT = Backoff(base=0.1, cap=2.0, jitter=0.5)
"""Reconnect waits: 0.1 s doubling to 2 s (a broker that is back is found within 2 s, scenario
2 of the fault suite), each less up to half at random, so clients that lost the same broker
do not return in lockstep."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionStats:
    connected: bool
    generation: int
    reconnects: int
    failed_attempts: int
    last_error: str | None


class Session:
    """One live connection, its default channel, and every channel watched on it.

    The session is lost as a whole: when the connection or any watched channel closes,
    ``lost`` is set and the manager opens a new session (with a new ``generation``).
    """

    def __init__(
        self,
        connection: aiormq.abc.AbstractConnection,
        channel: aiormq.Channel,
        generation: int,
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.generation = generation
        self.lost = anyio.Event()
        self.reason: str | None = None
        self.watch(connection, "connection")
        self.watch(channel, "channel")

    @property
    def usable(self) -> bool:
        return not self.lost.is_set() and not self.channel.is_closed

    def watch(
        self,
        resource: aiormq.abc.AbstractChannel | aiormq.abc.AbstractConnection,
        what: str = "channel",
    ) -> Callable[[], None]:
        """Lose the session when ``resource`` closes. Returns a function that stops watching
        (call it before closing a channel on purpose)."""
        observer = resource.closing  # an independent observer future: cancelling it unwatches

        def closed(future: Any) -> None:
            if future.cancelled():
                return  # unwatched
            exc = future.exception()
            self.lose(f"{what} closed" + (f": {describe(exc)}" if exc is not None else ""))

        observer.add_done_callback(closed)

        def unwatch() -> None:
            observer.cancel()

        return unwatch

    def lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()

    async def open_channel(
        self, *, timeout: float, publisher_confirms: bool = False
    ) -> aiormq.Channel:
        """A new channel on this session's connection, not watched."""
        return await open_channel(
            self.connection, timeout=timeout, publisher_confirms=publisher_confirms
        )


async def open_channel(
    connection: aiormq.abc.AbstractConnection, *, timeout: float, publisher_confirms: bool
) -> aiormq.Channel:
    with anyio.fail_after(timeout):
        channel = await connection.channel(publisher_confirms=publisher_confirms)
    if not isinstance(channel, aiormq.Channel):  # aiormq's only implementation
        raise TypeError(f"unexpected channel type {type(channel).__name__}")
    return channel


async def close_quietly(resource: aiormq.abc.AbstractBase | None, *, timeout: float) -> None:
    """Close a channel or connection, shielded and bounded; errors only logged (it is going
    away anyway)."""
    if resource is None or resource.is_closed:
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
        try:
            # An explicit reason: aiormq rejects pending futures with it. The default
            # (CancelledError) would look like a cancellation to the tasks waiting on them.
            await resource.close(aiormq.exceptions.AMQPError("closed by taskflow"))
        except Exception as exc:
            log.debug("amqp_close_failed", error=describe(exc))


class RabbitMQConnection:
    """Keeps a session to RabbitMQ open, reconnecting on loss.

    Register ``on_connect`` callbacks first, then ``connect()`` (the first session, or
    ``TransportError`` when none could be made within ``connect_timeout``) and run ``run``
    as a task, which reopens the session whenever it is lost, retrying forever with backoff;
    ``running()`` does all three around a block.

    ``heartbeat`` (seconds) applies unless the URL sets one: a peer that vanished without
    closing the socket is noticed after about three missed heartbeats (aiormq's default of
    60 s would take three minutes).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "taskflow",
        publisher_confirms: bool = True,
        timeout: float = 10.0,
        connect_timeout: float = 15.0,
        backoff: Backoff | None = None,
        heartbeat: int = 15,
    ) -> None:
        parts = urlsplit(url)
        if "heartbeat" not in parse_qs(parts.query):
            query = (
                f"{parts.query}&heartbeat={heartbeat}" if parts.query else f"heartbeat={heartbeat}"
            )
            url = urlunsplit(parts._replace(query=query))
        self._url = url
        self.name = name
        self.publisher_confirms = publisher_confirms
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff or RECONNECT
        self._callbacks: list[OnConnect] = []
        self._session: Session | None = None
        self._generation = 0
        self._reconnects = 0
        self._failures = 0
        self._last_error: str | None = None
        self._changed: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<RabbitMQConnection {mask(self._url)} generation={self._generation}>"

    # ------------------------------------------------------------ state

    @property
    def session(self) -> Session | None:
        """The live session, or ``None`` while disconnected."""
        session = self._session
        return session if session is not None and not session.lost.is_set() else None

    @property
    def connected(self) -> bool:
        return self.session is not None

    @property
    def generation(self) -> int:
        """Increments with every session opened (connect and each reconnect)."""
        return self._generation

    def statistics(self) -> ConnectionStats:
        return ConnectionStats(
            connected=self.connected,
            generation=self._generation,
            reconnects=self._reconnects,
            failed_attempts=self._failures,
            last_error=self._last_error,
        )

    def on_connect(self, callback: OnConnect) -> None:
        """Run ``callback(session)`` on every new session before it counts as live (declare
        topology, resume consumers). An error there fails the session; it is retried."""
        self._callbacks.append(callback)

    async def wait_connected(self) -> Session:
        """Wait (without a timeout of its own) until a session is live."""
        while True:
            session = self.session
            if session is not None:
                return session
            await self._wait_changed()

    def lose(self, reason: str) -> None:
        """Drop the current session (it will be reopened); for adapters that detect a broken
        channel state, and for tests."""
        session = self._session
        if session is not None:
            session.lose(reason)

    # ------------------------------------------------------------ the loop

    async def connect(self) -> None:
        """Open the first session, retrying with backoff for up to ``connect_timeout``;
        raises ``TransportError`` if the broker cannot be reached by then."""
        if sniffio.current_async_library() != "asyncio":
            raise TransportError("the RabbitMQ adapters need AnyIO's asyncio backend (aiormq)")
        deadline = anyio.current_time() + self.connect_timeout
        attempt = 0
        while True:
            try:
                session = await self._open_session()
            except Exception as exc:
                self._failed(exc)
                if anyio.current_time() >= deadline:
                    raise TransportError(
                        f"cannot connect to RabbitMQ at {mask(self._url)}: {describe(exc)}"
                    ) from exc
                await self._back_off(attempt)
                attempt += 1
                continue
            self._live(session)
            return

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep a session open until cancelled (connecting first if ``connect`` was not
        called): wait for the loss of the live session, then reopen one, retrying forever."""
        try:
            if self._session is None:
                await self.connect()
            task_status.started()
            while True:
                session = self._session
                assert session is not None
                await session.lost.wait()
                self._reconnects += 1
                self._last_error = session.reason
                self._notify()
                log.warning(
                    "amqp_connection_lost",
                    name=self.name,
                    generation=session.generation,
                    reason=session.reason,
                )
                await close_quietly(session.connection, timeout=self.timeout)
                attempt = 0
                while True:
                    try:
                        session = await self._open_session()
                    except Exception as exc:
                        self._failed(exc)
                        await self._back_off(attempt)
                        attempt += 1
                        continue
                    self._live(session)
                    break
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the live session (idempotent); ``run`` does it when cancelled."""
        session = self._session
        self._session = None
        if session is not None:
            session.lose("connection closed")
            await close_quietly(session.connection, timeout=self.timeout)
        self._notify()

    def _live(self, session: Session) -> None:
        self._session = session
        self._notify()
        log.info("amqp_connected", name=self.name, generation=session.generation)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        self._last_error = describe(exc)

    async def _back_off(self, attempt: int) -> None:
        delay = self.backoff.delay(attempt)
        log.warning(
            "amqp_connect_failed",
            name=self.name,
            attempt=attempt + 1,
            retry_in=round(delay, 3),
            error=self._last_error,
        )
        await anyio.sleep(delay)

    async def _open_session(self) -> Session:
        with anyio.fail_after(self.timeout):
            connection = aiormq.Connection(
                self._url, client_properties={"connection_name": self.name}
            )
            try:
                await connection.connect()
            except BaseException:
                await close_quietly(connection, timeout=self.timeout)
                raise
        try:
            channel = await open_channel(
                connection, timeout=self.timeout, publisher_confirms=self.publisher_confirms
            )
            self._generation += 1
            session = Session(connection, channel, self._generation)
            for callback in self._callbacks:
                await callback(session)
            if session.lost.is_set():
                raise TransportError(f"session lost while opening: {session.reason}")
        except BaseException:
            await close_quietly(connection, timeout=self.timeout)
            raise
        return session

    # ------------------------------------------------------------ internals

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_changed(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()


@asynccontextmanager
async def running(
    connection: RabbitMQConnection, *tasks: Callable[..., Coroutine[Any, Any, Any]]
) -> AsyncIterator[None]:
    """Connect (``TransportError`` if the broker cannot be reached), then keep the
    connection, and ``tasks`` (each started with ``tg.start``), running in the background
    while the block runs; close it all afterwards.

    The background tasks never fail (they retry), so an exception from the task group can
    only be the block's own: it comes out as itself, not wrapped in an ``ExceptionGroup``
    (starlette's ``collapse_excgroups``), so callers catch ``TransportError`` as usual.
    """
    await connection.connect()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(connection.run)
            for task in tasks:
                await tg.start(task)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        exc, context = group.exceptions[0], group.exceptions[0].__context__
        try:
            raise exc
        finally:
            exc.__context__ = context  # keep its own context, not the group's
            del exc, context
    finally:
        await connection.close()


@asynccontextmanager
async def open_rabbitmq_connection(
    url: str, *, on_connect: OnConnect | None = None, **options: Any
) -> AsyncIterator[RabbitMQConnection]:
    """A connected ``RabbitMQConnection``, kept open (reconnecting) until the block ends."""
    connection = RabbitMQConnection(url, **options)
    if on_connect is not None:
        connection.on_connect(on_connect)
    async with running(connection):
        yield connection
