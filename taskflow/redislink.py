"""Redis for the API: one client per process with a circuit breaker, the shared Cache, and
an atomic, expiring GCRA rate-limit store (one Lua script per decision).

Redis is an accelerator, never a dependency: while it is unreachable, each call fails fast
(the breaker stays open ``RETRY_SECONDS``), callers fall back (the cache is bypassed, rate
limits are kept per process), and a warning is logged at most once a minute. asyncio only
(redis.asyncio), like the web server that uses it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from taskflow.log import get_logger
from taskflow.ports.cache import TOMBSTONE_SECONDS, CacheCounters, CacheStats

log = get_logger("taskflow.redis")
T = TypeVar("T")

RETRY_SECONDS = 1.0
"""After a failed call, Redis is left alone this long (calls fall back at once)."""
WARN_EVERY = 60.0
TIMEOUT = 0.5
"""Connect and read timeout of each call: a Redis that hangs costs a request at most this."""
NAMESPACE = "taskflow:"


class RedisUnavailable(Exception):
    """Redis did not answer (or the breaker is open): use the fallback."""


class RedisLink:
    """A ``redis.asyncio`` client behind a breaker."""

    def __init__(self, url: str, *, prefix: str = NAMESPACE) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.client: Any = aioredis.from_url(
            url,
            socket_connect_timeout=TIMEOUT,
            socket_timeout=TIMEOUT,
            health_check_interval=0,
            retry_on_timeout=False,
        )
        self._down_until = 0.0
        self._warned_at = -WARN_EVERY
        self._on_recover: list[Callable[[], Awaitable[None]]] = []
        self._was_down = False
        self._recovering = False
        self.failures = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def on_recover(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` on the first successful call after an outage."""
        self._on_recover.append(hook)

    async def call(self, op: Callable[[Any], Awaitable[T]], *, what: str) -> T:
        """``op(client)``; ``RedisUnavailable`` when the breaker is open or the call fails.
        The first call after an outage runs the ``on_recover`` hooks before ``op``."""
        if not self.available:
            raise RedisUnavailable(what)
        if self._was_down and not self._recovering:
            self._recovering = True
            try:
                for hook in self._on_recover:
                    await hook()
            finally:
                self._recovering = False
            if not self.available:  # a hook found it still down
                raise RedisUnavailable(what)
        try:
            result = await op(self.client)
        except Exception as exc:  # redis.RedisError, OSError, TimeoutError: all mean "down"
            self._trip(exc, what)
            raise RedisUnavailable(what) from exc
        if self._was_down and not self._recovering:
            self._was_down = False
            log.info("redis_recovered")
        return result

    def _trip(self, exc: BaseException, what: str) -> None:
        now = time.monotonic()
        self._down_until = now + RETRY_SECONDS
        self._was_down = True
        self.failures += 1
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "redis_unavailable",
                call=what,
                error=f"{type(exc).__name__}: {exc}"[:200],
                fallback="rate limits per process, cache bypassed",
            )

    async def check(self) -> None:
        await self.call(lambda c: c.ping(), what="ping")

    async def aclose(self) -> None:
        await self.client.aclose()


@asynccontextmanager
async def open_redis(url: str, *, prefix: str = NAMESPACE) -> AsyncIterator[RedisLink]:
    """A link to ``url`` whose keys start with ``prefix`` (the cluster's name,
    ``TASKFLOW_AMQP_PREFIX``); reachable or not (the first calls tell, and fall back)."""
    link = RedisLink(url, prefix=prefix)
    with contextlib.suppress(RedisUnavailable):  # logged; served without it until it answers
        await link.check()
    try:
        yield link
    finally:
        await link.aclose()


# ---------------------------------------------------------------- the cache

# SET unless the key was invalidated lately (its tombstone lives TOMBSTONE_SECONDS).
_PUT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# DEL each key and leave its tombstone.
_INVALIDATE = """
for i = 1, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i] .. ':tomb', '1', 'PX', ARGV[1])
end
return #KEYS
"""


class RedisCache:
    """The Cache port on Redis: shared by every process, so an invalidation in one is seen by
    all. Deletions that fail while Redis is down are kept and sent first when it is back."""

    backend = "redis"

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._put = link.client.register_script(_PUT)
        self._invalidate = link.client.register_script(_INVALIDATE)
        self._owed: set[str] = set()
        self._n = CacheCounters()
        link.on_recover(self._settle_owed)

    def _k(self, key: str) -> str:
        return self.link.prefix + "cache:" + key

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.link.call(lambda c: c.get(self._k(key)), what="cache get")
        except RedisUnavailable:
            self._n.bypassed += 1
            return None
        if value is None:
            self._n.misses += 1
            return None
        self._n.hits += 1
        return bytes(value)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0 or key in self._owed:
            return
        k = self._k(key)
        try:
            stored = await self.link.call(
                lambda c: self._put(keys=[k, k + ":tomb"], args=[value, int(ttl * 1000)]),
                what="cache put",
            )
        except RedisUnavailable:
            self._n.bypassed += 1
            return
        self._n.puts += int(stored)

    async def invalidate(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        self._n.invalidations += len(keys)
        if not await self._send(list(keys)):
            self._owed.update(keys)

    async def _send(self, keys: list[str]) -> bool:
        full = [self._k(key) for key in keys]
        try:
            await self.link.call(
                lambda c: self._invalidate(keys=full, args=[int(TOMBSTONE_SECONDS * 1000)]),
                what="cache invalidate",
            )
        except RedisUnavailable:
            self._n.bypassed += 1
            return False
        return True

    async def _settle_owed(self) -> None:
        owed, self._owed = sorted(self._owed), set()
        if owed and not await self._send(owed):
            self._owed.update(owed)

    def statistics(self) -> CacheStats:
        return self._n.stats(self.backend)


# ---------------------------------------------------------------- rate limits


@dataclass(frozen=True, slots=True)
class Decision:
    """One rate-limit decision (GCRA): allowed or not, and the headers' values."""

    allowed: bool
    limit: int
    remaining: int
    reset: float
    """Seconds until the limit is whole again."""
    retry_after: float
    """Seconds until a request would be allowed (0 when allowed)."""


def gcra(tat: float, now: float, count: int, period: float) -> tuple[Decision, float]:
    """The GCRA decision for a bucket whose theoretical arrival time is ``tat`` (seconds);
    ``(decision, new tat)`` (the tat is unchanged when refused)."""
    interval = period / count
    tat = max(tat, now)
    separation = tat - now
    if separation > period - interval:
        wait = separation - (period - interval)
        return Decision(False, count, 0, separation, wait), tat
    new_tat = tat + interval
    remaining = int((period - (new_tat - now)) // interval + 1e-9)
    return Decision(True, count, max(remaining, 0), new_tat - now, 0.0), new_tat


# KEYS[1]: the bucket. ARGV: interval ms, period ms. Server time, so API processes' clocks
# need not agree. Returns {allowed, separation ms after the decision}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > period - interval then return {0, tat - now} end
tat = tat + interval
redis.call('SET', KEYS[1], tat, 'PX', math.ceil(tat - now))
return {1, tat - now}
"""


class MemoryRateStore:
    """GCRA buckets in this process (no Redis, or while it is down). Expired buckets are
    dropped as new ones come, so memory is bounded by the clients of one period."""

    backend = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}

    async def acquire(self, key: str, count: int, period: float) -> Decision:
        now = self._clock()
        if len(self._tats) > 10_000:
            self._tats = {k: t for k, t in self._tats.items() if t > now}
        decision, tat = gcra(self._tats.get(key, now), now, count, period)
        self._tats[key] = tat
        return decision


class RedisRateStore:
    """GCRA buckets in Redis, one atomic script per decision, each key expiring when its
    bucket is full again: a limit holds across every API process. Falls back to
    ``fallback`` while Redis is unavailable."""

    backend = "redis"

    def __init__(self, link: RedisLink, fallback: MemoryRateStore | None = None) -> None:
        self.link = link
        self.fallback = fallback or MemoryRateStore()
        self._acquire = link.client.register_script(_ACQUIRE)

    async def acquire(self, key: str, count: int, period: float) -> Decision:
        interval_ms = period * 1000.0 / count
        full = self.link.prefix + "rl:" + key
        try:
            allowed, separation_ms = await self.link.call(
                lambda c: self._acquire(keys=[full], args=[interval_ms, period * 1000.0]),
                what="rate limit",
            )
        except RedisUnavailable:
            return await self.fallback.acquire(key, count, period)
        separation, interval = float(separation_ms) / 1000.0, period / count
        if not allowed:
            return Decision(False, count, 0, separation, separation - (period - interval))
        remaining = int((period - separation) // interval + 1e-9)
        return Decision(True, count, max(remaining, 0), separation, 0.0)
