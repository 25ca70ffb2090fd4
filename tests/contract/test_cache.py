"""Contract of the Cache port, run over every adapter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import pytest

from taskflow.memory import MemoryCache
from taskflow.ports.cache import Cache
from tests.conftest import mock_clock_backend

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    """One cache per test, for each adapter.

    Later adapters plug in here: add their name to ``params`` and a ``case`` that opens the
    adapter and closes it after the ``yield`` (e.g. ``"redis"``: a ``RedisCache`` on a fresh
    key prefix, calling ``require_service`` from tests/conftest.py when Redis is not
    reachable).
    """
    match request.param:
        case "memory":
            yield MemoryCache()
        case other:
            raise AssertionError(f"no Cache adapter named {other!r}")


def new_key() -> str:
    return f"contract:{uuid.uuid4().hex}"


async def test_set_get_and_delete(cache: Cache) -> None:
    key, other = new_key(), new_key()
    assert await cache.get(key) is None

    await cache.set(key, b"one", ttl=60)
    await cache.set(other, b"other", ttl=60)
    assert await cache.get(key) == b"one"

    await cache.set(key, b"two", ttl=60)
    assert await cache.get(key) == b"two"

    await cache.delete(key)
    assert await cache.get(key) is None
    assert await cache.get(other) == b"other"
    await cache.delete(key)  # deleting a missing key is fine


async def test_an_empty_value_is_a_value(cache: Cache) -> None:
    key = new_key()
    await cache.set(key, b"", ttl=60)
    assert await cache.get(key) == b""


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_a_value_is_gone_after_its_ttl(cache: Cache) -> None:
    key, longer = new_key(), new_key()
    await cache.set(key, b"short-lived", ttl=10)
    await cache.set(longer, b"long-lived", ttl=100)

    await anyio.sleep(9)
    assert await cache.get(key) == b"short-lived"

    await anyio.sleep(2)  # 11s in: past the ttl
    assert await cache.get(key) is None
    assert await cache.get(longer) == b"long-lived"


@pytest.mark.parametrize("anyio_backend", [mock_clock_backend()])
async def test_setting_again_restarts_the_ttl(cache: Cache) -> None:
    key = new_key()
    await cache.set(key, b"v1", ttl=10)
    await anyio.sleep(8)

    await cache.set(key, b"v2", ttl=10)
    await anyio.sleep(8)  # 16s after the first set, 8s after the second

    assert await cache.get(key) == b"v2"
