"""web.deflate: a zlib stream whose shared slices are compressed once for every stream."""

from __future__ import annotations

import random
import zlib

import pytest

from actors.hub import Joined
from web import deflate
from web.deflate import HEADER, Deflater, accepts_deflate, adler32_combine


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip, deflate, br, zstd", True),  # what browsers send
        ("deflate", True),
        ("DEFLATE;q=0.5", True),
        ("gzip;q=1.0, deflate;q=0", False),
        ("deflate;q=0, *", False),  # named with q=0: refused whatever * says
        ("*", True),
        ("*;q=0", False),
        ("gzip", False),
        ("identity", False),
        ("", False),
        (None, False),
        ("deflate;q=zero", False),
        (" , ;;, deflate ; q=0.001", True),
    ],
)
def test_accept_encoding_is_read_as_http_says(header: str | None, accepted: bool) -> None:
    assert accepts_deflate(header) is accepted


def test_adler32_combine_matches_zlib_on_any_split() -> None:
    rng = random.Random(7)
    lengths = [0, 1, 2, 100, 65520, 65521, 65522, 200_000]
    for length in lengths:
        data = rng.randbytes(length) if length % 2 else b"\xff" * length
        for cut in {0, length // 3, length}:
            first, second = data[:cut], data[cut:]
            combined = adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
            assert combined == zlib.adler32(data), (length, cut)


def test_streams_that_share_slices_each_decode_to_their_own_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compressed: list[bytes] = []
    real = deflate.fragment

    def counted(data: bytes) -> bytes:
        compressed.append(data)
        return real(data)

    monkeypatch.setattr(deflate, "fragment", counted)
    rng = random.Random(3)
    slices = [
        Joined(
            b"".join(
                b'event: started\ndata: {"n":%d}\n\n' % rng.randrange(10**9) for _ in range(300)
            )
        )
        for _ in range(5)
    ]
    # Two streams: each its own frames between the same shared slices, in its own order
    plans = [
        [b"retry: 2000\n\n", 0, b": keep-alive\n\n", 1, 2, b"event: dropped\n\n", 3, 4],
        [b"retry: 2000\n\n", b"event: snapshot\ndata: {}\n\n", 0, 1, 3, b"x" * 70_000, 4],
    ]
    for plan in plans:
        deflater = Deflater()
        wire = [HEADER]
        for step in plan:
            if isinstance(step, bytes):
                wire.append(deflater.own(step))
            else:
                wire.append(deflater.shared(slices[step]))
        wire.append(deflater.end())
        inflater = zlib.decompressobj()  # zlib format: checks the header and the Adler-32
        text = b"".join(inflater.decompress(part) for part in wire)  # write by write
        expected = b"".join(s if isinstance(s, bytes) else slices[s].data for s in plan)
        assert text == expected
        assert inflater.eof and not inflater.unused_data
        assert deflater.raw == len(expected) and deflater.sent == sum(map(len, wire))
    assert len(compressed) == 5  # each shared slice compressed once, for both streams
    assert sum(len(s.data) for s in slices) > 5 * sum(
        len(s.deflated[0]) for s in slices if s.deflated
    )


def test_each_write_decodes_completely_on_arrival() -> None:
    # A browser shows an event as soon as its write arrives: nothing waits in the inflater.
    deflater = Deflater()
    inflater = zlib.decompressobj()
    assert inflater.decompress(HEADER + deflater.own(b"retry: 2000\n\n")) == b"retry: 2000\n\n"
    shared = Joined(b"event: succeeded\ndata: {}\n\n" * 50)
    assert inflater.decompress(deflater.shared(shared)) == shared.data
    assert inflater.decompress(deflater.own(b": keep-alive\n\n")) == b": keep-alive\n\n"
    assert not inflater.eof
    assert inflater.decompress(deflater.end()) == b"" and inflater.eof
