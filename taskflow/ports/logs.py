"""The LogStore port: each job's captured log lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class LogStore(Protocol):
    async def append(self, job_id: str, attempt: int, lines: Sequence[str]) -> None:
        """Add an attempt's lines. Raises ``LogStoreError`` when the store fails."""
        ...

    async def read(self, job_id: str) -> str | None:
        """The whole log of the job, or ``None`` if it has none."""
        ...

    async def delete(self, job_ids: Sequence[str]) -> None: ...
