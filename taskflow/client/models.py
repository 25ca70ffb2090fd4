"""What the client's calls return: frozen views of the API's JSON (``raw`` keeps all of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    task: str
    queue: str
    status: str
    attempts: int
    max_attempts: int
    progress: float
    result: Any
    error: dict[str, Any] | None
    created_at: str | None
    finished_at: str | None
    attempt_history: list[dict[str, Any]] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    @classmethod
    def of(cls, body: dict[str, Any]) -> Job:
        return cls(
            id=str(body["id"]),
            task=str(body.get("taskType", "")),
            queue=str(body.get("queueName", "")),
            status=str(body["status"]),
            attempts=int(body.get("attempts", 0)),
            max_attempts=int(body.get("maxAttempts", 0)),
            progress=float(body.get("progress") or 0.0),
            result=body.get("result"),
            error=body.get("error"),
            created_at=body.get("createdAt"),
            finished_at=body.get("finishedAt"),
            attempt_history=list(body.get("attemptHistory") or []),
            replays=list(body.get("replays") or []),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    name: str
    scopes: list[str]
    created_at: str | None
    revoked_at: str | None
    active: bool

    @classmethod
    def of(cls, body: dict[str, Any]) -> KeyInfo:
        return cls(
            name=str(body["name"]),
            scopes=list(body.get("scopes") or []),
            created_at=body.get("createdAt"),
            revoked_at=body.get("revokedAt"),
            active=bool(body.get("active", body.get("revokedAt") is None)),
        )


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``secret`` is shown this once (the server keeps only its hash)."""

    name: str
    scopes: list[str]
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class BulkResult:
    """A bulk replay or a purge: how many were acted on and how many matched."""

    done: int
    matched: int
    dry_run: bool
