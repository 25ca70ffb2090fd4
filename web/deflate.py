"""Event streams compressed with ``Content-Encoding: deflate`` when the client accepts it
(every browser does), with the bytes shared by many subscribers compressed once.

A stream is one zlib stream (RFC 1950): a two-byte header, deflate data, and at the end an
empty final block and the Adler-32 of everything sent. Each write is compressed with a full
flush, which leaves the output byte-aligned and forgets the history: a fragment compressed
on its own decodes the same after anything. So the joined slice that every ``/events``
follower flushes on the same tick (``actors.hub.Joined``) is compressed once, for all of
them, and each stream combines its running Adler-32 with the fragment's in constant time
(``adler32_combine``, as zlib's). A stream's own frames (its snapshot, keep-alives,
``dropped``, ``end``) go through its own compressor, with the same full flush.
"""

from __future__ import annotations

import zlib

from actors.hub import Joined

LEVEL = 1
"""zlib's fastest level: the events' JSON still shrinks about 5.7 times."""
HEADER = b"\x78\x01"
"""A zlib header: deflate, a 32 KiB window, no preset dictionary."""
FINAL = b"\x03\x00"
"""An empty final block (fixed Huffman codes): the end of the deflate data."""
_BASE = 65521


def accepts_deflate(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value accepts ``deflate``: named, or ``*``, with a
    quality above 0 (``deflate;q=0`` refuses it, whatever ``*`` says)."""
    qualities: dict[str, float] = {}
    for part in (header or "").split(","):
        name, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[name.lower()] = quality
    found = qualities.get("deflate", qualities.get("*", 0.0))
    return found > 0


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of ``A + B`` from ``adler32(A)``, ``adler32(B)`` and ``len(B)`` (zlib's
    ``adler32_combine``, which Python's ``zlib`` does not expose)."""
    rem = second_length % _BASE
    sum1 = first & 0xFFFF
    sum2 = (rem * sum1) % _BASE
    sum1 += (second & 0xFFFF) + _BASE - 1
    sum2 += ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + _BASE - rem
    sum1 %= _BASE
    sum2 %= _BASE
    return sum1 | (sum2 << 16)


def fragment(data: bytes) -> bytes:
    """``data`` as deflate blocks that decode the same after any other fragment."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


class Deflater:
    """One stream's zlib encoding: ``HEADER`` first, then ``own`` or ``shared`` per write,
    ``end`` last."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._adler = zlib.adler32(b"")
        self.raw = 0
        """Bytes before compression, so far."""
        self.sent = len(HEADER)
        """Bytes after compression, so far (the header included)."""

    def own(self, data: bytes) -> bytes:
        """``data`` that only this stream sends."""
        self._adler = zlib.adler32(data, self._adler)
        out = self._compressor.compress(data) + self._compressor.flush(zlib.Z_FULL_FLUSH)
        return self._count(len(data), out)

    def shared(self, joined: Joined) -> bytes:
        """A slice that other streams send too: compressed by the first to send it."""
        if joined.deflated is None:
            joined.deflated = (fragment(joined.data), zlib.adler32(joined.data))
        out, adler = joined.deflated
        self._adler = adler32_combine(self._adler, adler, len(joined.data))
        return self._count(len(joined.data), out)

    def end(self) -> bytes:
        """The final block and the checksum: the client knows the stream is whole."""
        return self._count(0, FINAL + self._adler.to_bytes(4, "big"))

    def _count(self, raw: int, out: bytes) -> bytes:
        self.raw += raw
        self.sent += len(out)
        return out
