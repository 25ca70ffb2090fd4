"""API keys: what a key is, how one is made, and how it is recognised (by its hash only).

A key is ``tf_`` followed by 43 URL-safe characters (32 random bytes). The store keeps its
SHA-256, never the key: a key is as random as a password manager's and needs no slow hash;
a stolen table gives no key. Scopes: ``read`` (GETs and streams), ``submit`` (submit and
cancel), ``admin`` (replay, purge, keys); ``admin`` implies the other two.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from taskflow.errors import ValidationError

PREFIX = "tf_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Scope(enum.StrEnum):
    READ = "read"
    SUBMIT = "submit"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """A key as the store knows it (no secret in it)."""

    name: str
    scopes: frozenset[Scope]
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    """``name`` if it is 1..64 of letters, digits, ``.``, ``_``, ``-`` (starting with a letter or
    digit); else ``ValidationError``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            "A key name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            f"or a digit; got {name!r}.",
            fields={"name": "invalid key name"},
        )
    return name


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[Scope]:
    """Scopes from ``"read,submit"`` or a list; ``ValidationError`` naming an unknown one or
    an empty set."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    names = [str(s).strip().lower() for s in items if str(s).strip()]
    known = {s.value for s in Scope}
    unknown = sorted(set(names) - known)
    if unknown or not names:
        raise ValidationError(
            f"Scopes are a non-empty list of {', '.join(sorted(known))}"
            + (f"; unknown: {', '.join(unknown)}." if unknown else "."),
            fields={"scopes": "unknown scope" if unknown else "at least one scope"},
        )
    return frozenset(Scope(n) for n in names)
