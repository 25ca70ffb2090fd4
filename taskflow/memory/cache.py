"""MemoryCache: values with a time to live, on AnyIO's clock."""

from __future__ import annotations

import anyio


class MemoryCache:
    """Implements ``Cache``. Expired entries are dropped when read."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._max = max_entries

    async def get(self, key: str) -> bytes | None:
        await anyio.lowlevel.checkpoint()
        entry = self._data.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= anyio.current_time():
            del self._data[key]
            return None
        return value

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        await anyio.lowlevel.checkpoint()
        if len(self._data) >= self._max and key not in self._data:
            self._data.pop(next(iter(self._data)))  # oldest insertion first
        self._data[key] = (value, anyio.current_time() + ttl)

    async def delete(self, key: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._data.pop(key, None)
