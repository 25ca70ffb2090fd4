"""MemoryKeyStore: the KeyStore port in a dict (embedded runtimes, ``memory://``, tests)."""

from __future__ import annotations

import time
from collections.abc import Set
from dataclasses import replace

from taskflow.errors import KeyExists, KeyNotFound
from taskflow.keys import ApiKey, Scope, check_name


class MemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}  # by hash

    async def create_key(self, name: str, scopes: Set[Scope], key_hash: str) -> ApiKey:
        check_name(name)
        if any(k.name == name and k.active for k in self._keys.values()):
            raise KeyExists(name=name)
        key = ApiKey(name=name, scopes=frozenset(scopes), created_at=time.time())
        self._keys[key_hash] = key
        return key

    async def find_key(self, key_hash: str) -> ApiKey | None:
        return self._keys.get(key_hash)

    async def list_keys(self, *, revoked: bool = False) -> list[ApiKey]:
        live = sorted((k for k in self._keys.values() if k.active), key=lambda k: k.name)
        if not revoked:
            return live
        gone = [k for k in self._keys.values() if not k.active]
        return live + sorted(gone, key=lambda k: (k.name, k.created_at))

    async def revoke_key(self, name: str, *, now: float) -> ApiKey:
        for digest, key in self._keys.items():
            if key.name == name and key.active:
                self._keys[digest] = replace(key, revoked_at=now)
                return self._keys[digest]
        raise KeyNotFound(name=name)
