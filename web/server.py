"""WebServer: hypercorn serving the app inside the supervisor tree (asyncio backend).

Two hypercorn-on-asyncio traps are handled here: ``serve`` runs in its own child task (it leaks a ``cancelling()`` count onto the task that
awaits it), shielded, and a cancellation of ``run`` becomes the graceful shutdown trigger
(cancelling hypercorn mid-request gives a spurious ``InvalidStateError``, hypercorn#184).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import sniffio
from anyio.abc import TaskStatus
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from hypercorn.utils import wrap_app

from taskflow.errors import ConfigError
from taskflow.log import get_logger

log = get_logger("taskflow.web")

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


PORT_OPTION = "--port or TASKFLOW_PORT"


def reachable(host: str) -> str:
    """An address to connect to for a server bound to ``host`` (a wildcard: loopback)."""
    target = _WILDCARDS.get(host, host)
    return f"[{target}]" if ":" in target else target


def bind(host: str, port: int, *, option: str = PORT_OPTION) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening); ``ConfigError`` with what to
    do when the address is taken or cannot be used (``option``: how to choose another)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {host}:{port}: the port is already in use; stop the process "
                f"that holds it, or choose another port ({option})"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def listen(host: str, port: int, *, option: str = PORT_OPTION) -> Iterator[socket.socket]:
    """``bind`` for the life of the block: the port is ours before anything else starts."""
    sock = bind(host, port, option=option)
    try:
        yield sock
    finally:
        sock.close()


@dataclass(frozen=True, slots=True)
class WebServerStats:
    """``requests_in_flight`` counts HTTP requests inside the app; one counts until its
    connection lets go of the app (Quart waits for the client's disconnect)."""

    serving: bool
    bound_port: int | None
    requests_total: int
    requests_in_flight: int


@dataclass(kw_only=True)
class WebServer:
    """Serve an ASGI app with hypercorn on ``host:port``.

    Inputs: HTTP connections. Outputs: the app's responses. Restart: permanent (a crash
    rebinds the port). State: the listening socket and request counters.

    ``run`` binds the socket itself (``port=0`` picks a free port, then ``bound_port`` tells
    which), and calls ``task_status.started()`` only once a TCP connection to the port
    succeeds, that is once hypercorn has started the app and accepts connections. ``stop``
    stops accepting and lets in-flight requests finish within ``graceful_timeout`` seconds.
    """

    app: ASGIFramework
    host: str
    port: int
    graceful_timeout: float = 5.0
    sock: socket.socket | None = None
    """A socket bound by the caller (``listen``), kept by it: each run serves a duplicate."""
    bound_port: int | None = field(default=None, init=False)
    _shutdown: anyio.Event | None = field(default=None, init=False, repr=False)
    _finished: anyio.Event | None = field(default=None, init=False, repr=False)
    _stop_requested: bool = field(default=False, init=False, repr=False)
    _serving: bool = field(default=False, init=False, repr=False)
    _total: int = field(default=0, init=False, repr=False)
    _in_flight: int = field(default=0, init=False, repr=False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()`` or cancellation, then shut down gracefully and return.

        Raises ``RuntimeError`` on the trio backend, ``OSError`` if the port cannot be bound,
        and whatever hypercorn or the app's startup raise.
        """
        if sniffio.current_async_library() != "asyncio":
            raise RuntimeError("WebServer needs AnyIO's asyncio backend (Quart is asyncio-only)")
        shutdown = self._shutdown = anyio.Event()
        finished = self._finished = anyio.Event()
        if self._stop_requested:
            shutdown.set()
        try:
            sock = await self._bind()
        except BaseException:
            finished.set()
            raise
        try:
            config = self._config()

            async def serve() -> None:
                with anyio.CancelScope(shield=True):  # never cancel hypercorn's internals
                    await worker_serve(
                        wrap_app(self._counted, config.wsgi_max_body_size, "asgi"),
                        config,
                        sockets=Sockets(
                            secure_sockets=[], insecure_sockets=[sock], quic_sockets=[]
                        ),
                        shutdown_trigger=shutdown.wait,
                    )

            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)  # its own task: keeps hypercorn's cancelling() leak off ours
                try:
                    if await self._wait_accepting(shutdown):
                        self._serving = True
                        log.info("web_serving", host=self.host, port=self.bound_port)
                    task_status.started()
                    await shutdown.wait()
                finally:
                    shutdown.set()  # our cancellation -> graceful stop within graceful_timeout
        finally:
            self._serving = False
            sock.close()
            finished.set()
            log.info("web_stopped", host=self.host, port=self.bound_port)

    async def stop(self) -> None:
        """Stop accepting connections, let in-flight requests finish (at most
        ``graceful_timeout`` seconds), and return once ``run`` has returned."""
        self._stop_requested = True
        if self._shutdown is not None:
            self._shutdown.set()
        if self._finished is not None:
            with anyio.move_on_after(self.graceful_timeout + 5.0):
                await self._finished.wait()

    def statistics(self) -> WebServerStats:
        return WebServerStats(
            serving=self._serving,
            bound_port=self.bound_port,
            requests_total=self._total,
            requests_in_flight=self._in_flight,
        )

    # ------------------------------------------------------------ internals

    async def _counted(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._total += 1
        self._in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1

    async def _bind(self) -> socket.socket:
        sock = self.sock.dup() if self.sock is not None else bind(self.host, self.port)
        sock.setblocking(False)
        self.bound_port = int(sock.getsockname()[1])
        return sock

    def _config(self) -> Config:
        config = Config()
        config.bind = []  # the socket is ours, handed over in `sockets`
        config.graceful_timeout = self.graceful_timeout
        config.errorlog = logging.getLogger("hypercorn.error")
        config.accesslog = None
        config.include_server_header = False
        return config

    async def _wait_accepting(self, shutdown: anyio.Event) -> bool:
        """Poll the port until a connection succeeds; ``False`` if stopped first."""
        assert self.bound_port is not None
        target = _WILDCARDS.get(self.host, self.host)
        delay = 0.002
        while not shutdown.is_set():
            try:
                stream = await anyio.connect_tcp(target, self.bound_port)
            except OSError:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            await stream.aclose()
            return True
        return False
