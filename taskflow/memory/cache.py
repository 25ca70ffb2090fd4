"""MemoryCache: the Cache port in this process (LRU, bounded; no Redis configured)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from taskflow.ports.cache import TOMBSTONE_SECONDS, CacheCounters, CacheStats


class MemoryCache:
    backend = "memory"

    def __init__(self, *, max_items: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.max_items = max_items
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._tombstones: dict[str, float] = {}
        self._n = CacheCounters()

    async def get(self, key: str) -> bytes | None:
        found = self._items.get(key)
        if found is None or found[0] <= self._clock():
            self._items.pop(key, None)
            self._n.misses += 1
            return None
        self._items.move_to_end(key)
        self._n.hits += 1
        return found[1]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        now = self._clock()
        if ttl <= 0 or self._tombstones.get(key, 0.0) > now:
            return
        self._items[key] = (now + ttl, value)
        self._items.move_to_end(key)
        self._n.puts += 1
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    async def invalidate(self, keys: Sequence[str]) -> None:
        now = self._clock()
        if len(self._tombstones) > self.max_items:
            self._tombstones = {k: t for k, t in self._tombstones.items() if t > now}
        for key in keys:
            self._items.pop(key, None)
            self._tombstones[key] = now + TOMBSTONE_SECONDS
        self._n.invalidations += len(keys)

    def statistics(self) -> CacheStats:
        return self._n.stats(self.backend)
