"""MemoryLogStore: job logs in a dict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio


class MemoryLogStore:
    """Implements ``LogStore`` in a dict; ``fail`` makes every call raise (for tests of the
    paths that must survive a log store outage)."""

    location = "memory"

    def __init__(self) -> None:
        self._logs: dict[str, bytearray] = {}
        self.fail: Exception | None = None

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def append(self, entries: Mapping[str, bytes]) -> None:
        await anyio.lowlevel.checkpoint()
        self._check()
        for job_id, data in entries.items():
            self._logs.setdefault(job_id, bytearray()).extend(data)

    async def read(self, job_id: str) -> bytes | None:
        await anyio.lowlevel.checkpoint()
        self._check()
        data = self._logs.get(job_id)
        return None if data is None else bytes(data)

    async def size(self, job_id: str) -> int:
        await anyio.lowlevel.checkpoint()
        self._check()
        return len(self._logs.get(job_id, b""))

    async def delete(self, job_ids: Sequence[str]) -> None:
        await anyio.lowlevel.checkpoint()
        self._check()
        for job_id in job_ids:
            self._logs.pop(job_id, None)

    async def link(self, job_id: str) -> str | None:
        await anyio.lowlevel.checkpoint()
        return None
