"""PostgresJobStore: the JobStore and JobQueries ports on PostgreSQL (psycopg 3, async pool).

Every method is one transaction and, for batches, one statement per change kind: the whole
batch travels as arrays (``unnest``), never one round trip per job. Driver errors stop here
and leave as ``StoreError``. Queries run shielded from AnyIO cancellation under a client
timeout, with a server-side ``statement_timeout`` below it, so a cancelled caller never leaves
a half-read connection in the pool (an AnyIO-cancelled psycopg query would close its
connection and leave the server running it: docs/architecture.md, "Durable state").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import anyio
import msgspec
import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from taskflow.backoff import Backoff
from taskflow.errors import IdempotencyConflict, JobNotFound, NotStorable, StoreError, TaskflowError
from taskflow.jobs import (
    Attempt,
    Job,
    JobError,
    JobStatus,
    Outcome,
    ReplayRecord,
    Trigger,
    sources,
    transition,
)
from taskflow.memory.store import WORKER_LOST
from taskflow.ports.store import (
    Bury,
    Change,
    Complete,
    DeadLetterQuery,
    DeadMessage,
    Inserted,
    JobQuery,
    MarkCancelled,
    Progress,
    Recovered,
    Release,
    Renew,
    ReplayRequest,
    Reschedule,
)
from taskflow.postgres.sql import queries

Row = dict[str, Any]
Conn = psycopg.AsyncConnection[Row]
T = TypeVar("T")
_RETRIES = 4
_RETRY_WAIT = Backoff(base=0.02, cap=0.2, jitter=1.0)
"""Between retries of a transaction rolled back by a deadlock or a serialization failure."""
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_REFUSED = (psycopg.DataError, psycopg.IntegrityError)
"""A value the server (or the driver, for a NUL in text) refuses: a data error, not an outage.
It leaves as ``NotStorable``, which nobody retries as it is; callers split the batch."""


def _json(value: Any) -> str:
    """A payload or result as JSON text for a ``jsonb`` column (the wire codec's rendering)."""
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        raise NotStorable(f"value cannot be stored as JSON: {exc}") from exc


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _error_json(error: JobError | None) -> str | None:
    if error is None:
        return None
    return json.dumps(
        {
            "code": error.code,
            "message": error.message,
            "type": error.type,
            "reason": error.reason,
            "traceback": error.traceback,
        }
    )


def _error(value: Any) -> JobError | None:
    if value is None:
        return None
    return JobError(
        code=value["code"],
        message=value["message"],
        type=value.get("type"),
        reason=value.get("reason"),
        traceback=value.get("traceback"),
    )


def _attempt(value: dict[str, Any]) -> Attempt:
    started = value.get("started_at")
    return Attempt(
        number=int(value["number"]),
        series=int(value.get("series") or 0),
        worker=value.get("worker"),
        started_at=None if started is None else float(started),
        finished_at=float(value["finished_at"]),
        outcome=Outcome(value["outcome"]),
        error=_error(value.get("error")),
    )


def _replay(value: dict[str, Any]) -> ReplayRecord:
    return ReplayRecord(
        at=float(value["at"]),
        by=value.get("by"),
        reason=value.get("reason"),
        payload_changed=bool(value.get("payload_changed")),
    )


def _job(row: Row) -> Job:
    return Job(
        id=str(row["id"]),
        task=row["task"],
        payload=row["payload"],
        queue=row["queue"],
        status=JobStatus(row["status"]),
        priority=row["priority"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        created_at=row["created_at"].timestamp(),
        updated_at=row["updated_at"].timestamp(),
        run_at=_epoch(row["run_at"]),
        started_at=_epoch(row["started_at"]),
        finished_at=_epoch(row["finished_at"]),
        result=row["result"],
        error=_error(row["error"]),
        progress=float(row["progress"]),
        progress_message=row["progress_message"],
        idempotency_key=row["idempotency_key"],
        lease_owner=row["lease_owner"],
        lease_expires_at=_epoch(row["lease_expires_at"]),
        cancel_requested=row["cancel_requested"],
        published=row["published"],
        replay_count=row["replay_count"],
        original_error=_error(row["original_error"]),
        original_payload=row["original_payload"],
        history=tuple(_attempt(a) for a in row["history"]),
        replays=tuple(_replay(r) for r in row["replays"]),
    )


def _valid_ids(job_ids: Sequence[str]) -> list[str]:
    """Ids that are UUIDs; anything else cannot name a job."""
    valid = []
    for job_id in job_ids:
        try:
            uuid.UUID(job_id)
        except (ValueError, AttributeError, TypeError):
            continue
        valid.append(job_id)
    return valid


class PostgresJobStore:
    """Implements ``JobStore`` and ``JobQueries`` on PostgreSQL."""

    def __init__(
        self, pool: AsyncConnectionPool, *, timeout: float = 30.0, acquire_timeout: float = 5.0
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self.acquire_timeout = acquire_timeout
        """How long a call waits for a connection: while the server is down, callers get a
        ``StoreError`` (the API a 503 with Retry-After) instead of waiting for it to return."""
        self._sql = queries()

    # ------------------------------------------------------------ plumbing

    @asynccontextmanager
    async def _tx(self, *, transaction: bool = True) -> AsyncIterator[Conn]:
        """A connection (in a transaction unless the body is one statement: the pool's
        connections autocommit), shielded from outer cancellation, bounded by ``timeout``."""
        with anyio.CancelScope(shield=True), anyio.fail_after(self.timeout):
            try:
                async with self.pool.connection(timeout=self.acquire_timeout) as raw:
                    conn = cast(Conn, raw)  # the pool's connections use dict_row
                    if transaction:
                        async with conn.transaction():
                            yield conn
                    else:
                        yield conn
            except TaskflowError:
                raise
            except _REFUSED as exc:
                raise NotStorable(f"the database refused a value: {exc}".strip()) from exc
            except psycopg.Error as exc:
                raise StoreError(f"database error: {type(exc).__name__}: {exc}".strip()) from exc
            except TimeoutError as exc:
                raise StoreError(f"database call exceeded {self.timeout} s") from exc

    async def _run(self, body: Callable[[Conn], Awaitable[T]], *, transaction: bool = True) -> T:
        """Run ``body`` (in a transaction unless it is a single statement); a deadlock or
        serialization failure rolled it all back, so it is retried (a few times, with jitter)."""
        for attempt in range(1, _RETRIES + 1):
            try:
                async with self._tx(transaction=transaction) as conn:
                    return await body(conn)
            except StoreError as exc:
                if attempt == _RETRIES or not isinstance(exc.__cause__, _RETRYABLE):
                    raise
                await anyio.sleep(_RETRY_WAIT.delay(attempt - 1))
        raise AssertionError("unreachable")

    async def _rows(
        self, name: str, params: Mapping[str, Any], *, prepare: bool | None = None
    ) -> list[Row]:
        async def body(conn: Conn) -> list[Row]:
            cur = await conn.execute(self._sql[name], params, prepare=prepare)
            return await cur.fetchall() if cur.description else []

        return await self._run(body, transaction=False)  # one statement: atomic on its own

    async def statement(self, name: str, params: Mapping[str, Any]) -> list[Row]:
        """Run the named statement of ``queries.sql`` on its own (for the adapters that share
        this store's pool: the key store)."""
        return await self._rows(name, params)

    # ------------------------------------------------------------ writes

    async def insert(
        self,
        jobs: Sequence[Job],
        *,
        now: float,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        key_expires_at: float | None = None,
    ) -> Inserted:
        ids = [j.id for j in jobs]

        async def body(conn: Conn) -> Inserted:
            if idempotency_key is not None:
                claimed = await conn.execute(
                    self._sql["claim_key"],
                    {
                        "key": idempotency_key,
                        "hash": request_hash,
                        "ids": ids,
                        "now": _ts(now),
                        "expires_at": _ts(key_expires_at),
                    },
                )
                if await claimed.fetchone() is None:
                    # Another request holds the key (it committed first: the unique index
                    # made us wait for it), so answer with its batch or refuse.
                    cur = await conn.execute(self._sql["get_key"], {"key": idempotency_key})
                    known = await cur.fetchone()
                    assert known is not None
                    if known["request_hash"] != request_hash:
                        raise IdempotencyConflict(
                            "the idempotency key was used with a different request",
                            idempotency_key=idempotency_key,
                        )
                    return Inserted(job_ids=tuple(known["job_ids"]), replayed=True)
            await conn.execute(
                self._sql["insert_jobs"], {"rows": _json(rows), "key": idempotency_key}
            )
            return Inserted(job_ids=tuple(ids))

        rows = [
            {
                "id": j.id,
                "task": j.task,
                "queue": j.queue,
                "payload": j.payload,
                "status": j.status.value,
                "priority": j.priority,
                "max_attempts": j.max_attempts,
                "timeout": j.timeout,
                "run_at": _ts(j.run_at),
                "created_at": _ts(j.created_at),
            }
            for j in jobs
        ]

        return await self._run(body, transaction=idempotency_key is not None)

    async def claim(
        self, job_ids: Sequence[str], *, owner: str, now: float, lease_until: float
    ) -> list[Job]:
        ids = _valid_ids(job_ids)
        if not ids:
            return []
        rows = await self._rows(
            "claim",
            {
                "ids": ids,
                "owner": owner,
                "now": _ts(now),
                "lease_until": _ts(lease_until),
                "sources": _src(Trigger.CLAIM),
            },
        )
        return [_job(r) for r in rows]

    async def settle(self, changes: Sequence[Change], *, now: float) -> list[Job | None]:
        groups: dict[type, list[Any]] = {}
        for change in changes:
            groups.setdefault(type(change), []).append(change)
        ts = _ts(now)

        async def body(conn: Conn) -> dict[tuple[str, type], Job]:
            applied: dict[tuple[str, type], Job] = {}
            for kind, batch in groups.items():
                name, params = _settle_params(kind, batch)
                cur = await conn.execute(self._sql[name], {"now": ts, **params})
                for row in await cur.fetchall():
                    applied[(str(row["id"]), kind)] = _job(row)
            return applied

        applied = await self._run(body, transaction=len(groups) > 1)
        return [applied.get((c.job_id, type(c))) for c in changes]

    async def promote_due(self, *, now: float, limit: int) -> list[Job]:
        rows = await self._rows("promote_due", {"now": _ts(now), "limit": limit})
        # RETURNING does not keep the subquery's order: restore it (oldest due first).
        return sorted((_job(r) for r in rows), key=lambda j: (j.run_at or 0.0, j.created_at))

    async def cancel(self, job_id: str, *, now: float) -> Job:
        if not _valid_ids([job_id]):
            raise JobNotFound(f"job {job_id!r} not found", job_id=job_id)

        async def body(conn: Conn) -> Job:
            cur = await conn.execute(self._sql["lock_job"], {"id": job_id})
            row = await cur.fetchone()
            if row is None:
                raise JobNotFound(f"job {job_id!r} not found", job_id=job_id)
            status = JobStatus(row["status"])
            transition(status, Trigger.CANCEL)  # raises InvalidTransition for terminal jobs
            name = "request_cancel" if status is JobStatus.IN_PROGRESS else "cancel_now"
            cur = await conn.execute(self._sql[name], {"id": job_id, "now": _ts(now)})
            updated = await cur.fetchone()
            assert updated is not None
            return _job(updated)

        return await self._run(body)

    async def replay(
        self, job_ids: Sequence[str], *, now: float, request: ReplayRequest | None = None
    ) -> list[Job]:
        ids = _valid_ids(job_ids)
        if not ids:
            return []
        request = request or ReplayRequest()
        rows = await self._rows(
            "replay",
            {
                "ids": ids,
                "now": _ts(now),
                "sources": _src(Trigger.REPLAY),
                "payload": None if request.payload is None else _json(request.payload),
                "by": request.by,
                "reason": request.reason,
            },
        )
        return [_job(r) for r in rows]

    async def purge_dead_letters(self, query: DeadLetterQuery) -> list[str]:
        rows = await self._rows(
            "purge_dead_letters", {**_dead_filter(query), "limit": query.limit}, prepare=False
        )
        return [r["id"] for r in rows]

    async def recover_expired(
        self, *, now: float, limit: int, owners: Sequence[str] = ()
    ) -> Recovered:
        rows = await self._rows(
            "recover_expired",
            {
                "now": _ts(now),
                "limit": limit,
                "error": _error_json(WORKER_LOST),
                "owners": list(owners),
            },
        )
        jobs = [_job(r) for r in rows]
        return Recovered(
            requeued=tuple(j for j in jobs if j.status is JobStatus.PENDING),
            buried=tuple(j for j in jobs if j.status is JobStatus.FAILED),
        )

    async def mark_published(self, job_ids: Sequence[str]) -> None:
        ids = _valid_ids(job_ids)
        if ids:
            await self._rows("mark_published", {"ids": ids})

    async def unpublished(self, *, before: float, now: float, limit: int) -> list[Job]:
        rows = await self._rows(
            "unpublished", {"before": _ts(before), "now": _ts(now), "limit": limit}
        )
        return sorted((_job(r) for r in rows), key=lambda j: j.created_at)

    async def record_dead_messages(self, messages: Sequence[DeadMessage]) -> None:
        if not messages:
            return
        await self._rows(
            "record_dead_messages",
            {
                "queues": [m.queue for m in messages],
                "bodies": [m.body.replace("\x00", "\ufffd") for m in messages],
                "reasons": [m.reason for m in messages],
                "ats": [_ts(m.at) for m in messages],
            },
        )

    async def dead_messages(self, *, limit: int = 50, offset: int = 0) -> list[DeadMessage]:
        rows = await self._rows("dead_messages", {"limit": limit, "offset": offset})
        return [
            DeadMessage(
                id=r["id"],
                queue=r["queue"],
                body=r["body"],
                reason=r["reason"],
                at=r["created_at"].timestamp(),
            )
            for r in rows
        ]

    async def purge(
        self, *, now: float, completed_before: float, failed_before: float, limit: int
    ) -> list[str]:
        async def body(conn: Conn) -> list[str]:
            cur = await conn.execute(
                self._sql["purge_jobs"],
                {
                    "completed_before": _ts(completed_before),
                    "failed_before": _ts(failed_before),
                    "limit": limit,
                },
            )
            ids = [r["id"] for r in await cur.fetchall()]
            await conn.execute(self._sql["purge_keys"], {"now": _ts(now), "limit": limit})
            return ids

        return await self._run(body)

    # ------------------------------------------------------------ reads

    async def list_dead_letters(self, query: DeadLetterQuery) -> list[Job]:
        before_at, before_id = query.before if query.before else (None, None)
        params = {
            **_dead_filter(query),
            "before_at": _ts(before_at),
            "before_id": before_id,
            "limit": query.limit,
            "offset": query.offset,
        }
        rows = await self._rows("dead_letters", params, prepare=False)
        return [_job(r) for r in rows]

    async def count_dead_letters(self, query: DeadLetterQuery) -> int:
        rows = await self._rows("count_dead_letters", _dead_filter(query), prepare=False)
        return int(rows[0]["n"])

    async def get(self, job_id: str) -> Job:
        if _valid_ids([job_id]):
            rows = await self._rows("get", {"id": job_id})
            if rows:
                return _job(rows[0])
        raise JobNotFound(f"job {job_id!r} not found", job_id=job_id)

    async def list(self, query: JobQuery) -> list[Job]:
        before_at, before_id = query.before if query.before else (None, None)
        rows = await self._rows(
            "list_jobs",
            {
                "status": query.status.value if query.status else None,
                "task": query.task,
                "queue": query.queue,
                "before_at": _ts(before_at),
                "before_id": before_id,
                "limit": query.limit,
                "offset": query.offset,
            },
            prepare=False,  # plan with the real values, so each filter uses its index
        )
        return [_job(r) for r in rows]

    async def counts(self) -> Mapping[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        for row in await self._rows("counts", {}):
            counts[JobStatus(row["status"])] = row["n"]
        return counts

    async def count_status(self, status: JobStatus, *, limit: int) -> int:
        rows = await self._rows("count_status", {"status": status.value, "limit": max(limit, 0)})
        return int(rows[0]["n"])

    async def next_run_at(self) -> float | None:
        rows = await self._rows("next_run_at", {})
        return _epoch(rows[0]["run_at"]) if rows else None

    async def check(self) -> None:
        await self._rows("check", {})


def _dead_filter(query: DeadLetterQuery) -> dict[str, Any]:
    text = query.text
    return {
        "task": query.task,
        "queue": query.queue,
        "code": query.error_code,
        "since": _ts(query.since),
        "until": _ts(query.until),
        "q": None if text is None else text.lower(),
        "q_exact": text,
    }


def _src(trigger: Trigger) -> list[str]:
    return sorted(s.value for s in sources(trigger))


def _settle_params(kind: type, batch: list[Any]) -> tuple[str, dict[str, Any]]:
    ids = [c.job_id for c in batch]
    attempts = [c.attempt for c in batch]
    base: dict[str, Any] = {"ids": ids, "attempts": attempts}
    if kind is Complete:
        return "complete", {
            **base,
            "results": [_json(c.result) for c in batch],
            "sources": _src(Trigger.SUCCEED),
        }
    if kind is Reschedule:
        return "reschedule", {
            **base,
            "run_ats": [_ts(c.run_at) for c in batch],
            "errors": [_error_json(c.error) for c in batch],
            "sources": _src(Trigger.RETRY),
        }
    if kind is Bury:
        return "bury", {
            **base,
            "errors": [_error_json(c.error) for c in batch],
            "sources": _src(Trigger.DEAD_LETTER),
        }
    if kind is MarkCancelled:
        return "mark_cancelled", {**base, "sources": _src(Trigger.CANCEL)}
    if kind is Release:
        return "release", {**base, "sources": _src(Trigger.RELEASE)}
    if kind is Progress:
        return "progress", {
            **base,
            "percents": [c.percent for c in batch],
            "messages": [c.message for c in batch],
        }
    if kind is Renew:
        return "renew", {**base, "untils": [_ts(c.until) for c in batch]}
    raise TypeError(f"unknown change {kind.__name__}")
