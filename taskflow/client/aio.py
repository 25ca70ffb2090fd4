"""AsyncClient: every route of the TaskFlow API as an awaitable call (httpx underneath)."""

from __future__ import annotations

import builtins
import math
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from taskflow.client.errors import ApiError, ServerUnreachable, error_from
from taskflow.client.models import BulkResult, CreatedKey, Job, JobPage, KeyInfo

DEFAULT_URL = "http://127.0.0.1:8000"
PREFIX = "/api/v1"
MAX_WAIT = 60.0
"""The longest ``?wait=`` the server holds a request (``wait`` loops for longer timeouts)."""


@dataclass(frozen=True, slots=True)
class DlqFilters:
    """The dead-letter filters, shared by listing, bulk replay and purge."""

    task: str | None = None
    queue: str | None = None
    error_code: str | None = None
    since: str | float | None = None
    until: str | float | None = None
    text: str | None = None

    def params(self) -> dict[str, str]:
        pairs = {
            "task_type": self.task,
            "queue_name": self.queue,
            "error_code": self.error_code,
            "since": self.since,
            "until": self.until,
            "q": self.text,
        }
        return {k: str(v) for k, v in pairs.items() if v is not None and v != ""}


def _flag(value: bool) -> str:
    return "true" if value else "false"


class AsyncClient:
    """``async with AsyncClient(url, key) as tf: ...``; every method raises ``ApiError``."""

    def __init__(
        self, url: str | None = None, key: str | None = None, *, timeout: float = 30.0
    ) -> None:
        self.url = (url or os.environ.get("TASKFLOW_URL") or DEFAULT_URL).rstrip("/")
        key = key if key is not None else os.environ.get("TASKFLOW_KEY") or None
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"  # never the key

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------ plumbing

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One call; the response if it is a success, else the error of its envelope."""
        try:
            response = await self._http.request(
                method,
                PREFIX + path,
                params=params,
                json=json,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise error_from(response.status_code, _json_or_none(response), response.headers)
        return response

    def _unreachable(self, exc: httpx.TransportError) -> ServerUnreachable:
        reason = str(exc) or type(exc).__name__
        return ServerUnreachable(f"cannot reach {self.url} ({reason})")

    async def _json(self, method: str, path: str, **options: Any) -> Any:
        return (await self.request(method, path, **options)).json()

    # ------------------------------------------------------------ jobs

    async def submit(
        self,
        task: str,
        payloads: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> list[str]:
        """Submit one job per payload (a single mapping is one job); the new ids."""
        items = [payloads or {}] if payloads is None or isinstance(payloads, Mapping) else payloads
        body: dict[str, Any] = {"task_type": task, "data": [{"payload": p} for p in items]}
        options = {
            "queue_name": queue,
            "priority": priority,
            "delay_seconds": delay,
            "max_attempts": max_attempts,
            "timeout_seconds": timeout,
        }
        body.update({k: v for k, v in options.items() if v is not None})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = await self._json("POST", "/jobs", json=body, headers=headers)
        return [str(i) for i in answer["taskIds"]]

    async def get(self, job_id: str, *, wait: float | None = None) -> Job:
        """The job; with ``wait`` (0 < wait <= 60 s) held until it is terminal."""
        params = {"wait": f"{wait:g}"} if wait else None
        held = (wait or 0) + 10.0
        return Job.of(await self._json("GET", f"/jobs/{job_id}", params=params, timeout=held))

    async def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """The job once terminal; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {job_id} not terminal after {timeout:g} s")
            job = await self.get(job_id, wait=min(MAX_WAIT, max(0.1, math.ceil(left * 10) / 10)))
            if job.terminal:
                return job

    async def list(
        self,
        *,
        status: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page, newest first; pass ``next_cursor`` back for the next."""
        params = {"status": status, "task_type": task, "queue_name": queue, "cursor": cursor}
        query = {k: v for k, v in params.items() if v} | {"limit": str(limit)}
        page = await self._json("GET", "/jobs", params=query)
        return JobPage([Job.of(j) for j in page["tasks"]], page.get("nextCursor"))

    async def iterate(self, **filters: Any) -> AsyncIterator[Job]:
        """Every job matching ``filters`` (as ``list`` takes them), page after page."""
        cursor = None
        while True:
            page = await self.list(cursor=cursor, **filters)
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> Job:
        return Job.of(await self._json("POST", f"/jobs/{job_id}/cancel"))

    async def logs(self, job_id: str, *, format: str = "text", attempt: int | None = None) -> str:
        """The job's log as text (or ``format="jsonl"``: its JSON lines)."""
        params = {"format": format} | ({"attempt": str(attempt)} if attempt else {})
        return (await self.request("GET", f"/logs/{job_id}", params=params)).text

    async def follow_logs(
        self, job_id: str, *, format: str = "text", attempt: int | None = None
    ) -> AsyncIterator[str]:
        """The job's log lines as they come (Server-Sent Events), until the job ends."""
        params = {"format": format, "follow": "true"} | (
            {"attempt": str(attempt)} if attempt else {}
        )
        try:
            async with self._http.stream(
                "GET", f"{PREFIX}/logs/{job_id}", params=params, timeout=None
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from(
                        response.status_code, _json_or_none(response), response.headers
                    )
                event, data = "message", []
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line:
                        if event == "end":
                            return
                        if event == "log" and data:
                            yield "\n".join(data)
                        event, data = "message", []
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    # ------------------------------------------------------------ dead letters

    async def dlq_list(
        self,
        filters: DlqFilters | None = None,
        *,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        params = (filters or DlqFilters()).params() | {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        page = await self._json("GET", "/dlq", params=params)
        return JobPage([Job.of(j) for j in page["tasks"]], page.get("nextCursor"))

    async def dlq_show(self, job_id: str) -> Job:
        return Job.of(await self._json("GET", f"/dlq/{job_id}"))

    async def replay(
        self, job_id: str, *, payload: Mapping[str, Any] | None = None, reason: str | None = None
    ) -> Job:
        """Replay one dead letter (with a corrected ``payload``, if given)."""
        body = {k: v for k, v in {"payload": payload, "reason": reason}.items() if v is not None}
        answer = await self._json("POST", f"/jobs/action/{job_id}/retry", json=body or None)
        return Job.of(answer["job"])

    async def replay_all(
        self,
        filters: DlqFilters | None = None,
        *,
        reason: str | None = None,
        dry_run: bool = False,
        limit: int | None = None,
    ) -> BulkResult:
        """Replay the matching dead letters (at most ``limit``; ``dry_run``: count them)."""
        params = (filters or DlqFilters()).params() | {"dry_run": _flag(dry_run)}
        if limit is not None:
            params["limit"] = str(limit)
        body = {"reason": reason} if reason else None
        answer = await self._json("POST", "/jobs/action/retry", params=params, json=body)
        return BulkResult(int(answer["replayed"]), int(answer["matched"]), bool(answer["dryRun"]))

    async def purge(
        self, filters: DlqFilters | None = None, *, all: bool = False, dry_run: bool = False
    ) -> BulkResult:
        """Delete the matching dead letters; without a filter, ``all=True`` is required."""
        params = (filters or DlqFilters()).params() | {
            "dry_run": _flag(dry_run),
            "all": _flag(all),
        }
        answer = await self._json("DELETE", "/dlq", params=params)
        return BulkResult(int(answer["purged"]), int(answer["matched"]), bool(answer["dryRun"]))

    async def dead_messages(
        self, *, limit: int = 50, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        params = {"limit": str(limit), "offset": str(offset)}
        return list((await self._json("GET", "/dlq/messages", params=params))["messages"])

    # ------------------------------------------------------------ keys and operations

    async def create_key(self, name: str, scopes: Sequence[str]) -> CreatedKey:
        answer = await self._json("POST", "/keys", json={"name": name, "scopes": list(scopes)})
        return CreatedKey(answer["name"], list(answer["scopes"]), answer["key"])

    async def list_keys(self, *, revoked: bool = False) -> builtins.list[KeyInfo]:
        answer = await self._json("GET", "/keys", params={"revoked": _flag(revoked)})
        return [KeyInfo.of(k) for k in answer["keys"]]

    async def revoke_key(self, name: str) -> KeyInfo:
        return KeyInfo.of(await self._json("DELETE", f"/keys/{name}"))

    async def metrics(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self._json("GET", "/metrics")
        return answer

    async def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self._json("GET", "/health")
        return answer

    async def cleanup(self) -> int:
        """Retention now; how many jobs were deleted."""
        return int((await self._json("POST", "/cleanup"))["deleted"])


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


__all__ = ["ApiError", "AsyncClient", "DlqFilters"]
