"""The Cache port: short-lived values by key."""

from __future__ import annotations

from typing import Protocol


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...
