"""The KeyStore port: API keys by name, found by the hash of the key."""

from __future__ import annotations

from collections.abc import Set
from typing import Protocol

from taskflow.keys import ApiKey, Scope


class KeyStore(Protocol):
    async def create_key(self, name: str, scopes: Set[Scope], key_hash: str) -> ApiKey:
        """Store a new live key. ``KeyExists`` if a live key has this name."""
        ...

    async def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not; ``None`` if there is none."""
        ...

    async def list_keys(self, *, revoked: bool = False) -> list[ApiKey]:
        """Live keys by name (with ``revoked``, revoked ones too, after them)."""
        ...

    async def revoke_key(self, name: str, *, now: float) -> ApiKey:
        """Revoke the live key called ``name``. ``KeyNotFound`` if there is none."""
        ...
