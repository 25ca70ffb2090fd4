"""PostgresKeyStore: the KeyStore port on the job store's pool (table ``taskflow_api_keys``)."""

from __future__ import annotations

from collections.abc import Set
from datetime import UTC, datetime
from typing import Any

import psycopg.errors

from taskflow.errors import KeyExists, KeyNotFound, NotStorable
from taskflow.keys import ApiKey, Scope, check_name
from taskflow.postgres.store import PostgresJobStore


def _key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        name=row["name"],
        scopes=frozenset(Scope(s) for s in row["scopes"] if s in Scope.__members__.values()),
        created_at=float(row["created_at"]),
        revoked_at=None if row["revoked_at"] is None else float(row["revoked_at"]),
    )


class PostgresKeyStore:
    def __init__(self, store: PostgresJobStore) -> None:
        self.store = store

    async def create_key(self, name: str, scopes: Set[Scope], key_hash: str) -> ApiKey:
        check_name(name)
        params = {"name": name, "hash": key_hash, "scopes": sorted(s.value for s in scopes)}
        try:
            rows = await self.store.statement("create_key", params)
        except NotStorable as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise KeyExists(name=name) from None
            raise
        return _key(rows[0])

    async def find_key(self, key_hash: str) -> ApiKey | None:
        rows = await self.store.statement("find_key", {"hash": key_hash})
        return _key(rows[0]) if rows else None

    async def list_keys(self, *, revoked: bool = False) -> list[ApiKey]:
        return [_key(r) for r in await self.store.statement("list_keys", {"revoked": revoked})]

    async def revoke_key(self, name: str, *, now: float) -> ApiKey:
        at = datetime.fromtimestamp(now, UTC)
        rows = await self.store.statement("revoke_key", {"name": name, "now": at})
        if not rows:
            raise KeyNotFound(name=name)
        return _key(rows[0])
