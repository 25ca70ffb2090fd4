"""FileLogStore: job logs as local files (the embedded default)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio

from taskflow.errors import LogStoreError
from taskflow.log import get_logger

log = get_logger("taskflow.files")

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)

try:
    import resource

    _RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)
except ImportError:  # not on this platform
    _RUSAGE_THREAD = None

Switches = Callable[[], tuple[int, int]]
"""The calling thread's context switches so far: (voluntary, involuntary)."""


def thread_switches() -> tuple[int, int]:
    """``Switches`` from ``getrusage(RUSAGE_THREAD)`` (Linux); (0, 0) where there is none."""
    if _RUSAGE_THREAD is None:
        return (0, 0)
    usage = resource.getrusage(_RUSAGE_THREAD)
    return (usage.ru_nvcsw, usage.ru_nivcsw)


class FileLogStore:
    """Implements ``LogStore``: ``<root>/<job_id>.log``, JSON lines.

    A local append takes microseconds (about 11 µs to create a file and write it on this
    machine's ext4), less than a hop to a worker thread costs, and a thread writing beside
    the event loop contends with it for the GIL at every system call. So a batch is written
    on the event loop in slices of ``SLICE`` files, yielding between slices. A disk that is
    slow (a network or failing one) sends the writes of the next ``THREAD_FOR`` seconds to a
    worker thread, so it never stalls the loop for long: it is slow once ``SLOW_RUN`` slices
    in a row took longer than ``slow_slice`` seconds each, or one slice took longer than
    ``stall``. A slow disk makes every slice slow; a busy machine makes some slow now and
    then (the kernel's journal or the scheduler kept them waiting), with fast ones between,
    and each fast slice starts the count again. Neither does a slice count that was only
    preempted (involuntary context switches and no voluntary one: it never waited for
    the disk): a thread would not have helped, and beside the loop it costs more than it
    saves (the two contend for the GIL at every system call).
    """

    SLICE = 32
    THREAD_FOR = 60.0
    SLOW_RUN = 3

    def __init__(
        self,
        root: Path,
        *,
        slow_slice: float = 0.005,
        stall: float = 0.05,
        switches: Switches = thread_switches,
    ) -> None:
        self.root = root
        self.location = root.resolve().as_uri() + "/"
        self._prefix = os.path.join(os.fspath(root), "")
        self.slow_slice = slow_slice
        self.stall = stall
        self._switches = switches
        self._slow_run = 0
        """Slices in a row slower than ``slow_slice`` (a fast one sets it back to 0)."""
        self._thread_until = 0.0
        self.preempted_slices = 0
        """Slow slices not counted: the thread was preempted, the disk was not slow."""

    @property
    def in_thread(self) -> bool:
        """Whether appends go to a worker thread now (a recent slice was slow)."""
        return time.monotonic() < self._thread_until

    def _path(self, job_id: str) -> str:
        # Plain strings and os calls: a no-op job's log costs one path and one append.
        if not _SAFE.match(job_id) or job_id.startswith("."):
            raise ValueError(f"not a job id: {job_id!r}")
        return f"{self._prefix}{job_id}.log"

    async def append(self, entries: Mapping[str, bytes]) -> None:
        try:
            paths = [(self._path(job_id), data) for job_id, data in entries.items()]
            for start in range(0, len(paths), self.SLICE):
                part = paths[start : start + self.SLICE]
                if self.in_thread:
                    await anyio.to_thread.run_sync(self._write, part)
                    continue
                began, switched = time.monotonic(), self._switches()
                self._write(part)
                ended = time.monotonic()
                if ended - began <= self.slow_slice:
                    self._slow_run = 0
                elif self._slow(ended - began, switched):
                    self._thread_until, self._slow_run = ended + self.THREAD_FOR, 0
                    log.warning(
                        "log_files_slow",
                        files=len(part),
                        seconds=round(ended - began, 4),
                        root=str(self.root),
                        hint=f"appends go to a worker thread for {self.THREAD_FOR:.0f} s",
                    )
                await anyio.lowlevel.checkpoint()
        except ValueError as exc:
            raise LogStoreError(str(exc)) from exc
        except OSError as exc:
            raise LogStoreError(f"cannot write job logs under {self.root}: {exc}") from exc

    def _slow(self, took: float, before: tuple[int, int]) -> bool:
        """Whether the disk is slow, after a slice that took ``took`` seconds (more than
        ``slow_slice``); ``before``: the thread's context switches when the slice began."""
        voluntary, involuntary = self._switches()
        if voluntary == before[0] and involuntary > before[1]:
            self.preempted_slices += 1  # never waited: the CPU was busy, not the disk
            return False
        self._slow_run += 1
        return self._slow_run >= self.SLOW_RUN or took > self.stall

    def _write(self, paths: Sequence[tuple[str, bytes]]) -> None:
        for path, data in paths:
            try:
                fd = os.open(path, _APPEND, 0o644)
            except FileNotFoundError:  # the first log, or the folder was removed
                self.root.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, _APPEND, 0o644)
            try:
                while data:  # a short write (a full disk) raises, never drops silently
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)

    async def read(self, job_id: str) -> bytes | None:
        try:
            path = self._path(job_id)
        except ValueError:
            return None
        try:
            return await anyio.Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LogStoreError(f"cannot read {path}: {exc}") from exc

    async def size(self, job_id: str) -> int:
        try:
            path = self._path(job_id)
        except ValueError:
            return 0
        await anyio.lowlevel.checkpoint()
        try:
            # A local stat takes microseconds: cheaper inline than a hop to a worker thread,
            # and the log shipper asks once per job it has not written yet.
            return os.stat(path).st_size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise LogStoreError(f"cannot read {path}: {exc}") from exc

    async def delete(self, job_ids: Sequence[str]) -> None:
        def remove() -> None:
            for job_id in job_ids:
                try:
                    os.unlink(self._path(job_id))
                except (ValueError, FileNotFoundError):
                    continue

        await anyio.to_thread.run_sync(remove)

    async def link(self, job_id: str) -> str | None:
        await anyio.lowlevel.checkpoint()
        return None
