"""The Cache port: reads worth keeping (a terminal job's view, the job counts), dropped the
moment the state they show changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CacheStats:
    backend: str
    """``memory`` (this process) or ``redis`` (shared by every process)."""
    hits: int
    misses: int
    puts: int
    invalidations: int
    bypassed: int
    """Reads and writes skipped because the backend was unavailable (served from the store)."""


@dataclass(slots=True)
class CacheCounters:
    """What an adapter counts, frozen into ``CacheStats`` by ``stats``."""

    hits: int = 0
    misses: int = 0
    puts: int = 0
    invalidations: int = 0
    bypassed: int = 0

    def stats(self, backend: str) -> CacheStats:
        return CacheStats(
            backend, self.hits, self.misses, self.puts, self.invalidations, self.bypassed
        )


class Cache(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` on a miss (or while the backend is unavailable)."""
        ...

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds, unless ``key`` was invalidated in the last few
        seconds: a value read before a change that committed meanwhile is never stored."""
        ...

    async def invalidate(self, keys: Sequence[str]) -> None:
        """Drop ``keys`` (after the change they show has committed). Never raises: a backend
        that is down gets the deletions once it is back."""
        ...

    def statistics(self) -> CacheStats: ...


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


COUNTS_KEY = "counts"
TOMBSTONE_SECONDS = 10.0
"""How long an invalidated key refuses ``put``: longer than any read that raced the change."""
