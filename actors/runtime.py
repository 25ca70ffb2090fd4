"""The handle callers use: submit, wait, cancel, replay, inspect.

``Runtime`` is what the embedding API (``taskflow.testing.embedded``), the web layer and the
service share: all state lives in the store, the actors do the work. ``open_runtime`` runs
the tree on any adapters and yields the handle.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import msgspec
from anyio.from_thread import BlockingPortal

from actors.logship import LogRead
from actors.metrics import MetricsSnapshot
from actors.tree import Tree, TreeConfig, open_tree
from taskflow.errors import ValidationError
from taskflow.jobs import ACTIVE, TERMINAL, Job, JobStatus
from taskflow.keys import ApiKey, check_name, key_hash, new_secret, parse_scopes
from taskflow.memory import MemoryJobStore
from taskflow.messages import CancelRequested, JobCancelled, NewJob, SubmitJobs
from taskflow.ports import DeadLetterQuery, DeadMessage, Inserted, JobQuery, ReplayRequest
from taskflow.registry import TaskRegistry
from taskflow.resources import Resources
from taskflow.storable import find_unstorable


def request_hash(jobs: Sequence[NewJob]) -> str:
    """A stable fingerprint of a submission, to tell a retried request from a different one.
    Raises ``ValidationError`` naming the field that cannot be encoded."""
    try:
        return hashlib.sha256(msgspec.json.encode(list(jobs), order="sorted")).hexdigest()
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        for i, job in enumerate(jobs):
            refused = find_unstorable(job.payload, f"jobs[{i}].payload")
            if refused is not None:
                raise ValidationError(
                    f"{refused.where} {refused.why}", fields={refused.where: refused.why}
                ) from exc
        raise ValidationError(f"the submission cannot be encoded: {exc}") from exc


class Runtime:
    """What callers use: submit, wait, cancel, replay, inspect. Shared by the embedding API
    and the web layer; all state lives in the store, the actors do the work."""

    def __init__(self, tree: Tree, resources: Resources) -> None:
        self.tree = tree
        self.resources = resources

    async def submit(
        self,
        task: str,
        payload: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
        delay: float = 0.0,
        idempotency_key: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> str:
        """Submit one job; returns its id once it is stored (and published if due)."""
        new = NewJob(
            task=task,
            payload=payload or {},
            queue=queue,
            priority=priority,
            delay=delay,
            max_attempts=max_attempts,
            timeout=timeout,
        )
        ids = await self.submit_many([new], idempotency_key=idempotency_key)
        return ids[0]

    async def submit_many(
        self, jobs: Sequence[NewJob], *, idempotency_key: str | None = None
    ) -> list[str]:
        inserted = await self.submit_batch(jobs, idempotency_key=idempotency_key)
        return list(inserted.job_ids)

    async def submit_batch(
        self, jobs: Sequence[NewJob], *, idempotency_key: str | None = None
    ) -> Inserted:
        """Submit a batch; ``Inserted.replayed`` says the key matched an earlier identical
        request (answered with its jobs, nothing new stored)."""
        command = SubmitJobs(
            jobs=tuple(jobs),
            idempotency_key=idempotency_key,
            request_hash=request_hash(jobs) if idempotency_key else None,
        )
        return await self.tree.ingest.submit(command)

    def task_names(self) -> list[str]:
        """The registered task names, sorted (what this process can submit)."""
        return sorted(self.tree.ingest.registry.names())

    async def get(self, job_id: str) -> Job:
        """Raises ``JobNotFound``."""
        return await self.resources.queries.get(job_id)

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        return await self.resources.queries.list(query)

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it is terminal. Raises ``TimeoutError`` after ``timeout`` seconds."""
        waiters = self.tree.waiters  # the process's one subscription (actors/waiters.py)
        with anyio.fail_after(timeout):
            while True:
                woke = waiters.expect(job_id)  # before the read: no event slips in between
                try:
                    job = await self.get(job_id)
                    if job.status in TERMINAL:
                        return job
                    # Wake on this job's terminal event; poll now and then in case one was lost.
                    with anyio.move_on_after(0.5):
                        await woke.wait()
                finally:
                    waiters.forget(job_id, woke)

    async def wait_idle(self, timeout: float | None = None, poll: float = 0.01) -> None:
        """Return when no job is pending, scheduled or in progress, every outcome is stored,
        and the metrics snapshot has counted every event (seen idle on two polls in a row)."""
        with anyio.fail_after(timeout):
            calm = 0
            while calm < 2:
                await anyio.sleep(poll)
                calm = calm + 1 if await self._idle() else 0

    async def _idle(self) -> bool:
        counts = await self.resources.queries.counts()
        if any(counts.get(status, 0) for status in ACTIVE):
            return False
        tree = self.tree
        return tree.pool.idle() and tree.logs.backlog() == 0 and tree.metrics.backlog() == 0

    async def cancel(self, job_id: str) -> Job:
        """Cancel a pending or scheduled job at once; ask a running one to stop (its
        ``finally`` blocks run, then it is recorded ``cancelled``). Raises ``JobNotFound`` or
        ``InvalidTransition`` for a terminal job."""
        res = self.resources
        job = await res.store.cancel(job_id, now=res.clock.now())
        if job.status is JobStatus.IN_PROGRESS:
            await res.events.publish([CancelRequested(job_id=job_id)])
        else:
            await res.events.publish(
                [
                    JobCancelled(
                        job_id=job.id, task=job.task, attempt=job.attempts, at=res.clock.now()
                    )
                ]
            )
        return job

    async def replay(self, job_id: str, request: ReplayRequest | None = None) -> Job | None:
        """Replay one dead letter (with a corrected payload, if ``request`` has one);
        ``None`` if the job is not a dead letter."""
        jobs = await self.tree.dlq.replay([job_id], request)
        return jobs[0] if jobs else None

    async def replay_all(
        self,
        query: DeadLetterQuery | None = None,
        request: ReplayRequest | None = None,
        *,
        task: str | None = None,
        limit: int | None = None,
    ) -> int:
        """Replay every dead letter matching ``query`` (all of them without one; ``task``
        narrows it to one task type), at most ``limit`` of them."""
        if task is not None:
            query = dataclasses.replace(query or DeadLetterQuery(), task=task)
        return await self.tree.dlq.replay_matching(query, request, limit=limit)

    async def count_dead_letters(self, query: DeadLetterQuery | None = None) -> int:
        return await self.tree.dlq.count(query)

    async def purge_dead_letters(self, query: DeadLetterQuery | None = None) -> int:
        """Delete the dead letters matching ``query`` (all without one), with their logs."""
        return await self.tree.dlq.purge(query)

    async def cleanup(self) -> int:
        """Retention now: delete every terminal job past its retention (with its log and
        cached view), as the reaper does each sweep; how many."""
        return await self.tree.reaper.cleanup()

    async def create_key(self, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
        """A new API key: ``(key, secret)``; the secret is shown once and only its hash is
        kept. ``ValidationError`` for a bad name or scope, ``KeyExists`` for a live name."""
        wanted = parse_scopes(scopes)
        secret = new_secret()
        key = await self.resources.keys.create_key(check_name(name), wanted, key_hash(secret))
        return key, secret

    async def list_keys(self, *, revoked: bool = False) -> list[ApiKey]:
        return await self.resources.keys.list_keys(revoked=revoked)

    async def revoke_key(self, name: str) -> ApiKey:
        """Revoke the live key ``name`` (``KeyNotFound`` if none): every API process refuses
        it within ``limits.KEY_CACHE_SECONDS``."""
        return await self.resources.keys.revoke_key(name, now=self.resources.clock.now())

    async def read_log(self, job_id: str) -> LogRead:
        """The job's log records (JSON lines) as this process sees them, and where from."""
        return await self.tree.logs.read(job_id)

    async def log_facts(self, job_id: str) -> tuple[bool, str | None]:
        """``(has_logs, link)``: whether the job logged a line, and a short-lived URL to its
        log where the store has one (S3)."""
        exists = await self.tree.logs.exists(job_id)
        return exists, (await self.tree.logs.link(job_id) if exists else None)

    async def dead_messages(self, *, limit: int = 50, offset: int = 0) -> list[DeadMessage]:
        """Transport messages dead-lettered because they named no job to run, with reasons."""
        return await self.resources.queries.dead_messages(limit=limit, offset=offset)

    async def dead_letter_list(self, query: DeadLetterQuery | None = None) -> list[Job]:
        """Dead letters matching ``query``, newest first."""
        return await self.tree.dlq.dead_letters(query)

    async def health(self, timeout: float = 2.0) -> dict[str, str]:
        """Probe every dependency: ``{"store": "ok" | reason, "transport": "ok" | reason}``."""
        res = self.resources
        probes = {"store": res.queries.check, "transport": res.transport.check}
        report: dict[str, str] = {}
        for name, probe in probes.items():
            try:
                with anyio.fail_after(timeout):
                    await probe()
            except Exception as exc:
                report[name] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                report[name] = "ok"
        return report

    @property
    def draining(self) -> bool:
        """Shutting down: submissions are refused while running jobs finish."""
        return self.tree.ingest.stopping

    def retrying(self) -> dict[str, str]:
        """Calls stuck retrying an unavailable dependency now: ``{call: last error}``."""
        return {c.call: f"{c.error} ({c.retries} tries)" for c in self.tree.retrying.stuck()}

    def metrics(self) -> MetricsSnapshot:
        """The metrics actor's latest snapshot."""
        return self.tree.metrics.snapshot()


class BlockingTaskFlow:
    """``Runtime`` for synchronous code (scripts, Flask, Django): each call runs on the
    runtime's event loop in its own thread (``taskflow.connect_blocking``) and blocks until
    it returns. Safe to call from many threads at once; their submissions share group
    commits."""

    def __init__(self, portal: BlockingPortal, runtime: Runtime) -> None:
        self._portal = portal
        self.runtime = runtime

    def submit(self, task: str, payload: dict[str, Any] | None = None, **options: Any) -> str:
        return self._portal.call(partial(self.runtime.submit, task, payload, **options))

    def submit_many(
        self, jobs: Sequence[NewJob], *, idempotency_key: str | None = None
    ) -> list[str]:
        call = partial(self.runtime.submit_many, jobs, idempotency_key=idempotency_key)
        return self._portal.call(call)

    def get(self, job_id: str) -> Job:
        return self._portal.call(self.runtime.get, job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        return self._portal.call(self.runtime.wait, job_id, timeout)

    def cancel(self, job_id: str) -> Job:
        return self._portal.call(self.runtime.cancel, job_id)

    def replay(self, job_id: str, request: ReplayRequest | None = None) -> Job | None:
        return self._portal.call(self.runtime.replay, job_id, request)


class EmbeddedTaskFlow(Runtime):
    """The runtime on in-memory twins, with synchronous inspection helpers."""

    def __init__(self, tree: Tree, resources: Resources, store: MemoryJobStore) -> None:
        super().__init__(tree, resources)
        self.store = store

    def dead_letters(self) -> list[Job]:
        """Every dead-lettered job (status ``failed``, ``in_dlq`` true), oldest first."""
        return self.store.dead_letters()


@asynccontextmanager
async def open_runtime(
    registry: TaskRegistry, resources: Resources, config: TreeConfig
) -> AsyncIterator[Runtime]:
    """The tree on any adapters, with the handle callers use; stops gracefully on exit."""
    async with open_tree(registry, resources, config) as tree:
        yield Runtime(tree, resources)
