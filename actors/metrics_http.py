"""A worker's own Prometheus endpoint (``taskflow worker --metrics-port P``).

A worker imports nothing of the web stack, so this is a minimal HTTP/1.1 responder on AnyIO:
``GET /metrics`` answers the exposition of ``registry``; any other path is a 404, any other
method a 405. One request per connection, bounded in size and time.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import anyio
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from taskflow.errors import ConfigError
from taskflow.log import get_logger

log = get_logger("taskflow.metrics_http")

MAX_HEAD = 8192
READ_TIMEOUT = 10.0


@contextmanager
def bind(host: str, port: int) -> Iterator[socket.socket]:
    """The listening socket, bound before anything else starts (``ConfigError`` if taken)."""
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise ConfigError(f"cannot listen for metrics on {host}:{port}: {exc.strerror}") from exc
    try:
        yield sock
    finally:
        sock.close()


@dataclass(kw_only=True)
class MetricsServer:
    """Inputs: HTTP requests on ``sock``. Outputs: the exposition of ``registry``.
    Restart: permanent. State: none."""

    sock: socket.socket
    registry: CollectorRegistry

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.abc.SocketListener.from_socket(self.sock.dup())
        async with listener:
            task_status.started()
            await listener.serve(self._answer)

    async def _answer(self, stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(READ_TIMEOUT):
                    buffered = BufferedByteReceiveStream(stream)
                    head = await buffered.receive_until(b"\r\n\r\n", MAX_HEAD)
                    method, path = _request_line(head)
                    if method != "GET":
                        await _reply(stream, 405, b"method not allowed\n", "text/plain")
                    elif path.split("?", 1)[0] != "/metrics":
                        await _reply(stream, 404, b"not found: try /metrics\n", "text/plain")
                    else:
                        await _reply(
                            stream, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST
                        )
            except (anyio.IncompleteRead, anyio.DelimiterNotFound, ValueError):
                await _reply(stream, 400, b"bad request\n", "text/plain")
            except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, path, _version = line.split(" ", 2)
    return method, path


async def _reply(stream: SocketStream, status: int, body: bytes, content_type: str) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await stream.send(head + body)
