"""MemoryLogStore: job logs in a dict."""

from __future__ import annotations

from collections.abc import Sequence

import anyio


class MemoryLogStore:
    """Implements ``LogStore``; each attempt's lines follow a header line."""

    def __init__(self) -> None:
        self._logs: dict[str, list[str]] = {}

    async def append(self, job_id: str, attempt: int, lines: Sequence[str]) -> None:
        log = self._logs.setdefault(job_id, [])
        log.append(f"--- attempt {attempt} ---")
        log.extend(lines)
        await anyio.lowlevel.checkpoint()

    async def read(self, job_id: str) -> str | None:
        await anyio.lowlevel.checkpoint()
        lines = self._logs.get(job_id)
        return None if lines is None else "\n".join(lines) + "\n"

    async def delete(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self._logs.pop(job_id, None)
        await anyio.lowlevel.checkpoint()
