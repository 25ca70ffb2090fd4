"""Reading Server-Sent Events from Quart's test client (and from raw bytes)."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from quart.testing.connections import TestHTTPConnection

from tests.web.helpers import Client


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE block: an event (``kind``, ``data``, ``id``) or a comment (``comment``)."""

    kind: str | None = None
    data: Any = None
    id: str | None = None
    comment: str | None = None
    retry: int | None = None


def parse_block(block: str) -> Frame:
    kind, event_id, comment, retry = None, None, None, None
    lines: list[str] = []
    for line in block.split("\n"):
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            comment = value
        elif name == "event":
            kind = value
        elif name == "data":
            lines.append(value)
        elif name == "id":
            event_id = value
        elif name == "retry":
            retry = int(value)
    data: Any = None
    if lines:
        text = "\n".join(lines)
        try:
            data = json.loads(text)
        except ValueError:
            data = text
    return Frame(kind=kind, data=data, id=event_id, comment=comment, retry=retry)


@dataclass
class Reader:
    """Frames of one open stream, read as they come."""

    connection: TestHTTPConnection
    frames: list[Frame] = field(default_factory=list)
    ended: bool = False
    _buffer: str = ""
    inflater: Any = None
    """A zlib decompressor once the response says ``Content-Encoding: deflate``."""
    sent: int = 0
    """Bytes received (compressed, if it was)."""

    @property
    def events(self) -> list[Frame]:
        return [f for f in self.frames if f.kind is not None]

    def kinds(self) -> list[str]:
        return [f.kind for f in self.events if f.kind is not None]

    async def read_until(self, done: Callable[[Reader], bool], timeout: float = 10.0) -> Reader:
        with anyio.fail_after(timeout):
            while not done(self):
                if self.ended:
                    raise AssertionError(f"the stream ended first: {self.kinds()}")
                chunk = await self.connection.receive()
                if not chunk:
                    self.ended = True
                    continue
                self.sent += len(chunk)
                if self.inflater is None and self.encoding == "deflate":
                    self.inflater = zlib.decompressobj()
                if self.inflater is not None:
                    chunk = self.inflater.decompress(chunk)
                self._buffer += chunk.decode()
                while "\n\n" in self._buffer:
                    block, self._buffer = self._buffer.split("\n\n", 1)
                    self.frames.append(parse_block(block))
        return self

    @property
    def encoding(self) -> str | None:
        headers = self.connection.headers
        return headers.get("Content-Encoding") if headers is not None else None

    @property
    def whole(self) -> bool:
        """A deflated stream ended with its final block, and its checksum matched (zlib
        raises ``zlib.error`` on a wrong one)."""
        return self.inflater is not None and bool(self.inflater.eof)

    async def drain(self, seconds: float) -> Reader:
        """Read whatever arrives in the next ``seconds``."""
        with anyio.move_on_after(seconds):
            await self.read_until(lambda r: False, timeout=seconds + 5)
        return self

    async def until_kind(self, kind: str, timeout: float = 10.0) -> Frame:
        await self.read_until(lambda r: kind in r.kinds(), timeout)
        return next(f for f in self.events if f.kind == kind)

    async def to_end(self, timeout: float = 10.0) -> Reader:
        """Every frame until the server closes the stream."""
        return await self.read_until(lambda r: r.ended, timeout)


@asynccontextmanager
async def open_stream(
    client: Client, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Reader]:
    """An SSE stream held open for the block, then disconnected (like a browser tab closed)."""
    async with client.request(path, headers=headers or {}) as connection:
        await connection.send_complete()
        reader = Reader(connection)
        try:
            yield reader
        finally:
            await connection.disconnect()
