"""The Cache port, on its two adapters: this process's memory and Redis (shared)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from taskflow.memory.cache import MemoryCache
from taskflow.ports.cache import Cache
from taskflow.redislink import RedisCache, RedisLink

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemoryCache()
        return
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    link = RedisLink(url, prefix=prefix + ":")
    yield RedisCache(link)
    keys = await link.client.keys(prefix + ":*")
    if keys:
        await link.client.delete(*keys)
    await link.aclose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_value_is_kept_for_its_ttl(cache: Cache) -> None:
    assert await cache.get("a") is None
    await cache.put("a", b"1", 0.3)
    assert await cache.get("a") == b"1"
    await anyio.sleep(0.4)
    assert await cache.get("a") is None
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.puts) == (1, 2, 1)


async def test_an_invalidated_key_refuses_a_late_put(cache: Cache) -> None:
    await cache.put("job:1", b"failed", 60)
    await cache.invalidate(["job:1", "counts"])
    assert await cache.get("job:1") is None
    # a reader that read the store before the change commits now: refused
    await cache.put("job:1", b"failed", 60)
    assert await cache.get("job:1") is None
    await cache.put("job:2", b"x", 60)  # other keys are not affected
    assert await cache.get("job:2") == b"x"
    assert cache.statistics().invalidations == 2


async def test_a_zero_ttl_keeps_nothing(cache: Cache) -> None:
    await cache.put("z", b"1", 0)
    assert await cache.get("z") is None


async def test_redis_down_bypasses_and_settles_its_debts(redis_url: str, redis_prefix: str) -> None:
    link = RedisLink(redis_url, prefix=redis_prefix + ":")
    cache = RedisCache(link)
    await cache.put("job:9", b"old", 60)
    good = link.client
    broken = RedisLink("redis://127.0.0.1:1/0").client
    link.client = broken
    try:
        assert await cache.get("job:9") is None  # bypassed, not an error
        await cache.invalidate(["job:9"])  # owed
        assert cache.statistics().bypassed >= 2
    finally:
        link.client = good
        await broken.aclose()
    link._down_until = 0.0
    # the first call after the outage sends the owed deletion before anything else
    assert await cache.get("job:9") is None
    assert await good.get(link.prefix + "cache:job:9") is None
    keys = await good.keys(redis_prefix + ":*")
    if keys:
        await good.delete(*keys)
    await link.aclose()
