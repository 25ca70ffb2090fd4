"""The job counts (jobs by status), read through the cache: with Redis, every process of a
cluster shares one count query per ``ttl`` instead of each running its own."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from taskflow.jobs import JobStatus
from taskflow.ports import JobQueries
from taskflow.ports.cache import COUNTS_KEY, Cache


class _Counted(msgspec.Struct, frozen=True):
    at: float
    counts: dict[str, int]


@dataclass(kw_only=True)
class CachedCounts:
    """``counts()`` as ``JobQueries.counts`` gives it, cached ``ttl`` seconds; ``read_at`` is
    when the counts returned last were read from the store (epoch seconds, taken before the
    query: a job inserted after it may or may not be in them)."""

    queries: JobQueries
    cache: Cache
    ttl: float = 1.0
    read_at: float = 0.0

    async def counts(self) -> Mapping[JobStatus, int]:
        cached = await self.cache.get(COUNTS_KEY) if self.ttl > 0 else None
        if cached is not None:
            try:
                found = msgspec.json.decode(cached, type=_Counted)
            except msgspec.DecodeError:
                found = None
            if found is not None:
                self.read_at = found.at
                return {s: found.counts.get(s.value, 0) for s in JobStatus}
        at = time.time()
        counts = await self.queries.counts()
        self.read_at = at
        if self.ttl > 0:
            value = _Counted(at=at, counts={s.value: n for s, n in counts.items()})
            await self.cache.put(COUNTS_KEY, msgspec.json.encode(value), self.ttl)
        return counts
