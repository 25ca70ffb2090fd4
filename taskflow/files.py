"""FileLogStore: job logs as local files (the embedded default)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import anyio

from taskflow.errors import LogStoreError

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class FileLogStore:
    """Implements ``LogStore``: ``<root>/<job_id>.log``, one header line per attempt."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, job_id: str) -> Path:
        if not _SAFE.match(job_id) or job_id.startswith("."):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / f"{job_id}.log"

    async def append(self, job_id: str, attempt: int, lines: Sequence[str]) -> None:
        text = "".join(f"{line}\n" for line in [f"--- attempt {attempt} ---", *lines])
        try:
            path = self._path(job_id)
        except ValueError as exc:
            raise LogStoreError(str(exc)) from exc

        def write() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            # A lone surrogate in a line is kept as its escape rather than failing the write.
            with path.open("a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(text)

        try:
            await anyio.to_thread.run_sync(write)
        except OSError as exc:
            raise LogStoreError(f"cannot write the log of job {job_id}: {exc}") from exc

    async def read(self, job_id: str) -> str | None:
        try:
            path = self._path(job_id)
        except ValueError:
            return None
        try:
            return await anyio.Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    async def delete(self, job_ids: Sequence[str]) -> None:
        def remove() -> None:
            for job_id in job_ids:
                try:
                    self._path(job_id).unlink(missing_ok=True)
                except ValueError:
                    continue

        await anyio.to_thread.run_sync(remove)
