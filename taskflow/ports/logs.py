"""The LogStore port: each job's log, JSON lines (``taskflow.joblog``), append-only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class LogStore(Protocol):
    location: str
    """Where logs are read from, for people (``memory``, ``file:///...``, ``s3://bucket/logs/``)."""

    async def append(self, entries: Mapping[str, bytes]) -> None:
        """Add ``entries[job_id]`` (whole JSON lines) at the end of each job's log, in one call
        for many jobs. Raises ``LogStoreError`` when the store fails."""
        ...

    async def read(self, job_id: str) -> bytes | None:
        """The whole log of the job, or ``None`` if it has none. ``LogStoreError`` if the
        store cannot answer."""
        ...

    async def size(self, job_id: str) -> int:
        """Bytes in the job's log (0 if none). ``LogStoreError`` if the store cannot answer."""
        ...

    async def delete(self, job_ids: Sequence[str]) -> None: ...

    async def link(self, job_id: str) -> str | None:
        """A short-lived URL to read the log directly (S3: a presigned GET), if there is one."""
        ...
