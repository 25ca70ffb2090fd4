"""``taskflow keys``: create, list and revoke API keys on the database directly (the API's
``/api/v1/keys`` does the same for admins over HTTP)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from taskflow import adapters
from taskflow.config import Settings
from taskflow.errors import ConfigError
from taskflow.keys import ApiKey, check_name, key_hash, new_secret, parse_scopes
from taskflow.memory.keys import MemoryKeyStore
from taskflow.ports.keys import KeyStore


@asynccontextmanager
async def open_keys(settings: Settings) -> AsyncIterator[KeyStore]:
    """The key store of ``settings``' database (migrated first, as a service would)."""
    url = adapters.store_url(settings)
    open_store = adapters.opener(adapters.STORES, url, "TASKFLOW_DATABASE_URL")
    async with open_store(url, settings) as store:
        keys = adapters.key_store(store)
        if isinstance(keys, MemoryKeyStore):
            raise ConfigError(
                "taskflow keys needs PostgreSQL (TASKFLOW_DATABASE_URL, or unset for the "
                "embedded one): keys kept in memory would vanish with this command"
            )
        yield keys


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def key_table(found: list[ApiKey]) -> str:
    rows = [("NAME", "SCOPES", "CREATED", "REVOKED")]
    rows += [
        (
            k.name,
            ",".join(sorted(s.value for s in k.scopes)),
            _when(k.created_at),
            _when(k.revoked_at),
        )
        for k in found
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


async def run_keys_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.keys_command == "create":
        name, scopes = check_name(args.name), parse_scopes(args.scopes)  # before connecting
    async with open_keys(settings) as keys:
        if args.keys_command == "create":
            secret = new_secret()
            key = await keys.create_key(name, scopes, key_hash(secret))
            shown = ",".join(sorted(s.value for s in key.scopes))
            print(f"created API key {key.name!r} with scopes {shown}; it is shown only now:")
            sys.stdout.flush()
            print(secret)
        elif args.keys_command == "list":
            print(key_table(await keys.list_keys(revoked=args.revoked)))
        else:
            key = await keys.revoke_key(args.name, now=time.time())
            print(f"revoked API key {key.name!r}")
    return 0
