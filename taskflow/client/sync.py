"""Client: ``AsyncClient``'s calls, blocking (an event loop in a thread of its own runs them)."""

from __future__ import annotations

import builtins
import queue
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from taskflow.client.aio import AsyncClient, DlqFilters
from taskflow.client.models import BulkResult, CreatedKey, Job, JobPage, KeyInfo

T = TypeVar("T")


class Client:
    """``with Client(url, key) as tf: tf.submit(...)``: the same calls as ``AsyncClient``."""

    def __init__(
        self, url: str | None = None, key: str | None = None, *, timeout: float = 30.0
    ) -> None:
        self._stack = ExitStack()
        self._portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())
        self._async: AsyncClient = self._portal.call(_make, url, key, timeout)
        self.url = self._async.url

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._portal.call(self._async.aclose)
        finally:
            self._stack.close()

    def _iterate(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        items: queue.Queue[tuple[str, Any]] = queue.Queue()

        async def pump() -> None:
            try:
                async for item in make():
                    items.put(("item", item))
            except BaseException as exc:  # handed to the caller's thread
                items.put(("error", exc))
                raise
            items.put(("done", None))

        future = self._portal.start_task_soon(pump)
        try:
            while True:
                kind, value = items.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            future.cancel()

    # ------------------------------------------------------------ jobs

    def submit(
        self,
        task: str,
        payloads: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> list[str]:
        return self._portal.call(lambda: self._async.submit(task, payloads, **options))

    def get(self, job_id: str, *, wait: float | None = None) -> Job:
        return self._portal.call(lambda: self._async.get(job_id, wait=wait))

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        return self._portal.call(self._async.wait, job_id, timeout)

    def list(self, **filters: Any) -> JobPage:
        return self._portal.call(lambda: self._async.list(**filters))

    def iterate(self, **filters: Any) -> Iterator[Job]:
        return self._iterate(lambda: self._async.iterate(**filters))

    def cancel(self, job_id: str) -> Job:
        return self._portal.call(self._async.cancel, job_id)

    def logs(self, job_id: str, *, format: str = "text", attempt: int | None = None) -> str:
        return self._portal.call(lambda: self._async.logs(job_id, format=format, attempt=attempt))

    def follow_logs(
        self, job_id: str, *, format: str = "text", attempt: int | None = None
    ) -> Iterator[str]:
        return self._iterate(
            lambda: self._async.follow_logs(job_id, format=format, attempt=attempt)
        )

    # ------------------------------------------------------------ dead letters

    def dlq_list(self, filters: DlqFilters | None = None, **page: Any) -> JobPage:
        return self._portal.call(lambda: self._async.dlq_list(filters, **page))

    def dlq_show(self, job_id: str) -> Job:
        return self._portal.call(self._async.dlq_show, job_id)

    def replay(self, job_id: str, **options: Any) -> Job:
        return self._portal.call(lambda: self._async.replay(job_id, **options))

    def replay_all(self, filters: DlqFilters | None = None, **options: Any) -> BulkResult:
        return self._portal.call(lambda: self._async.replay_all(filters, **options))

    def purge(self, filters: DlqFilters | None = None, **options: Any) -> BulkResult:
        return self._portal.call(lambda: self._async.purge(filters, **options))

    def dead_messages(self, **page: Any) -> builtins.list[dict[str, Any]]:
        return self._portal.call(lambda: self._async.dead_messages(**page))

    # ------------------------------------------------------------ keys and operations

    def create_key(self, name: str, scopes: Sequence[str]) -> CreatedKey:
        return self._portal.call(self._async.create_key, name, scopes)

    def list_keys(self, *, revoked: bool = False) -> builtins.list[KeyInfo]:
        return self._portal.call(lambda: self._async.list_keys(revoked=revoked))

    def revoke_key(self, name: str) -> KeyInfo:
        return self._portal.call(self._async.revoke_key, name)

    def metrics(self) -> dict[str, Any]:
        return self._portal.call(self._async.metrics)

    def health(self) -> dict[str, Any]:
        return self._portal.call(self._async.health)

    def cleanup(self) -> int:
        return self._portal.call(self._async.cleanup)


async def _make(url: str | None, key: str | None, timeout: float) -> AsyncClient:
    return AsyncClient(url, key, timeout=timeout)
