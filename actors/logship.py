"""Log shipper: each job's log records leave the outcome path and reach the LogStore on their own.

The executor pool hands each attempt's ``JobLog`` to ``watch`` when the attempt starts and
each finished attempt to ``ship`` (hooks: synchronous, never blocking, never raising). While
an attempt runs, its new records are shipped every ``flush_interval`` seconds, so a tail
works from another process. The retrier, the DLQ keeper and the reaper add lifecycle lines
with ``note``. Writes are batched: one LogStore call for every job with new records.

Each job's log is capped at ``max_bytes``: the record that would pass it is replaced by one
truncation marker and later ones are dropped. A log store that fails (S3 down) does not lose
lines: they are spooled to local files and uploaded, in order, once it answers again. A store
slower than the jobs for a while (a burst on a busy machine) does not lose them either: past
the queue's ``buffer`` batches, lines wait in an overflow of up to ``overflow_bytes``, written
after the queue in the same order; only past that is a batch dropped and counted. No job
fails, stalls or burns an attempt because of logs.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from taskflow import joblog
from taskflow.context import JobContext
from taskflow.errors import LogStoreError
from taskflow.joblog import JobLog, LogRecord
from taskflow.log import get_logger
from taskflow.messages import AttemptCancelled, AttemptFailed, AttemptFinished, AttemptSucceeded
from taskflow.ports import LogStore
from taskflow.spool import own_spool
from taskflow.streams import receive_batch

log = get_logger("taskflow.logship")

SPOOL_RETRY = 5.0
"""Seconds between attempts to upload spooled lines while the log store fails."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShipLines:
    """Internal command: add ``lines`` (JSON lines, each ending with a newline) to the log of
    ``job_id``."""

    job_id: str
    lines: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class LogShipperStats:
    shipped: int
    """Batches of records the log store accepted."""
    failed: int
    """Batches the log store refused: spooled (or lost when there is no spool)."""
    dropped: int
    """Batches dropped because the queue and the overflow were full (the log store is too
    slow)."""
    spooled: int = 0
    """Jobs whose lines wait in the spool for the log store to return."""
    truncated: int = 0
    """Jobs whose log reached ``max_bytes``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRead:
    """A job's log as one process can see it: the store's, then its own spool."""

    data: bytes
    source: str
    """Where it was read from: the store's location, ``+ spool``, or ``spool`` alone."""
    complete: bool
    """False when the store could not be read (only the local spool is shown)."""


@dataclass(kw_only=True)
class LogShipper:
    """Inputs: JobLogs (``watch``), finished attempts (``ship``), lifecycle notes (``note``).
    Outputs: LogStore appends. Restart: permanent. State: the bounded buffer of records not
    yet written, the live attempts' logs, the spool directory."""

    logs: LogStore
    buffer: int = 4096
    """Batches (one per attempt or note) queued for the writer."""
    overflow_bytes: int = 64 * 1024 * 1024
    """Lines held beyond a full queue, in bytes, before batches are dropped."""
    max_bytes: int = 20 * 1024 * 1024
    """Per job; 0 turns log capture off."""
    spool: Path | None = None
    """The spool's root; each process spools into its own directory under it (``run``)."""
    flush_interval: float = 2.0
    worker: str = ""
    now: Callable[[], float] = time.time
    _send: MemoryObjectSendStream[ShipLines] = field(init=False, repr=False)
    _receive: MemoryObjectReceiveStream[ShipLines] = field(init=False, repr=False)
    _live: dict[tuple[str, int], JobLog] = field(default_factory=dict, init=False)
    _sizes: OrderedDict[str, int] = field(default_factory=OrderedDict, init=False)
    _full: set[str] = field(default_factory=set, init=False)
    _spooled: set[str] = field(default_factory=set, init=False)
    _retry_at: float = field(default=0.0, init=False)
    _busy: int = field(default=0, init=False)
    _shipped: int = field(default=0, init=False)
    _failed: int = field(default=0, init=False)
    _dropped: int = field(default=0, init=False)
    _overflow: deque[ShipLines] = field(default_factory=deque, init=False)
    _overflow_size: int = field(default=0, init=False)
    _dropping: bool = field(default=False, init=False)
    _truncated: int = field(default=0, init=False)

    _dir: Path | None = field(default=None, init=False)
    """This process's spool directory, while ``run`` runs."""

    def __post_init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[ShipLines](self.buffer)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    # ------------------------------------------------------------ hooks (never block)

    def watch(self, ctx: JobContext) -> None:
        """The attempt of ``ctx`` starts: its log is shipped while it runs."""
        if not self.enabled:
            ctx.journal.max_records = 0
            return
        self._live[(ctx.job_id, ctx.attempt)] = ctx.journal
        if ctx._log_empty and ctx.job_id not in self._sizes:
            self._sizes[ctx.job_id] = 0  # no store lookup for a log nobody has written yet
        ctx.journal.add(
            joblog.record(
                "info",
                ctx.attempt,
                f"attempt {ctx.attempt} started",
                source="taskflow",
                ts=self.now(),
                worker=self.worker,
                task=ctx.task,
                queue=ctx.queue,
            )
        )

    def ship(self, outcome: AttemptFinished) -> None:
        """The ``after_attempt`` hook: the attempt's last records and how it ended."""
        live = self._live.pop((outcome.job_id, outcome.attempt), None)
        if not self.enabled:
            return
        # The outcome's lines are JSON already: written as they are, never decoded again.
        lines = _encoded(live.take()) if live else []
        lines += [line.encode("utf-8", "backslashreplace") + b"\n" for line in outcome.log_lines]
        lines += _encoded([self._ending(outcome)])
        self._queue(outcome.job_id, lines)

    def note(self, job_id: str, attempt: int, level: str, message: str, **fields: Any) -> None:
        """A lifecycle line (retry scheduled, dead-lettered, replayed, worker lost)."""
        if self.enabled:
            item = joblog.record(
                level, attempt, message, source="taskflow", ts=self.now(), **fields
            )
            self._queue(job_id, _encoded([item]))

    def _queue(self, job_id: str, lines: Sequence[bytes]) -> None:
        if not lines:
            return
        item = ShipLines(job_id=job_id, lines=tuple(lines))
        if not self._overflow:  # else the queue waits behind the overflow: order holds
            try:
                self._send.send_nowait(item)
                return
            except anyio.WouldBlock:
                pass
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._dropped += 1
                return
        size = sum(map(len, lines))
        if self._overflow_size + size > self.overflow_bytes:
            self._dropped += 1
            if not self._dropping:  # once per episode, not once per job
                self._dropping = True
                log.warning(
                    "log_lines_dropped",
                    job_id=job_id,
                    held_bytes=self._overflow_size,
                    hint="the log store is slower than the jobs; counted in log_shipper.dropped",
                )
            return
        self._overflow.append(item)
        self._overflow_size += size

    def _ending(self, outcome: AttemptFinished) -> LogRecord:
        k, ts = outcome.attempt, self.now()
        match outcome:
            case AttemptSucceeded():
                took = max(0.0, outcome.at - outcome.started_at)
                return joblog.record(
                    "info", k, f"attempt {k} completed in {took:.3f} s", source="taskflow", ts=ts
                )
            case AttemptFailed(error=error):
                what = "timed out" if error.code == "timeout" else "failed"
                message = f"attempt {k} {what}: {error.code}: {error.message}"
                if error.traceback:
                    message += "\n" + error.traceback.rstrip()
                return joblog.record(
                    "error", k, message, source="taskflow", ts=ts, error_type=error.type
                )
            case AttemptCancelled():
                return joblog.record(
                    "warning", k, f"attempt {k} cancelled", source="taskflow", ts=ts
                )
        raise TypeError(f"not an outcome: {outcome!r}")

    # ------------------------------------------------------------ the actor

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        capture = joblog.capture_stdlib_logging() if self.enabled else None
        with ExitStack() as held:
            if self.spool is not None and self.enabled:
                self._dir = held.enter_context(own_spool(self.spool))
                self._spooled = {p.stem for p in self._dir.glob("*.jsonl")}  # adopted ones
            try:
                await self._serve(task_status)
            finally:
                if capture is not None:
                    joblog.release_stdlib_logging(capture)
                if self._spooled:
                    log.warning("log_spool_left", jobs=len(self._spooled), directory=str(self._dir))
                self._dir = None

    async def _serve(self, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._flush_live)
            task_status.started()
            while True:
                if self._overflow and not self._receive.statistics().current_buffer_used:
                    batch = self._take_overflow(256)
                else:
                    try:
                        batch = await receive_batch(self._receive, 256)
                    except anyio.EndOfStream:
                        if self._overflow:
                            continue
                        break
                self._busy = len(batch)
                await self._write(batch)
                self._busy = 0
            tg.cancel_scope.cancel()

    def _take_overflow(self, limit: int) -> list[ShipLines]:
        """The overflow's oldest ``limit`` batches (it fills only while the queue is full,
        and the queue refills only once the overflow is empty)."""
        batch = [self._overflow.popleft() for _ in range(min(limit, len(self._overflow)))]
        self._overflow_size -= sum(len(line) for item in batch for line in item.lines)
        if not self._overflow:
            self._overflow_size, self._dropping = 0, False
        return batch

    async def _flush_live(self) -> None:
        while True:
            await anyio.sleep(self.flush_interval)
            for (job_id, _), journal in list(self._live.items()):
                self._queue(job_id, _encoded(journal.take()))
            if self._spooled and self.now() >= self._retry_at:
                await self._write([])  # upload the spool

    async def stop(self) -> None:
        """Take no more lines; ``run`` returns once what is queued is written (or spooled)."""
        self._send.close()

    def close(self) -> None:
        self._send.close()
        self._receive.close()

    def backlog(self) -> int:
        """Batches queued, held in the overflow or being written."""
        queued = self._receive.statistics().current_buffer_used
        return queued + len(self._overflow) + self._busy

    def statistics(self) -> LogShipperStats:
        return LogShipperStats(
            shipped=self._shipped,
            failed=self._failed,
            dropped=self._dropped,
            spooled=len(self._spooled),
            truncated=self._truncated,
        )

    # ------------------------------------------------------------ writing

    async def _write(self, batch: Sequence[ShipLines]) -> None:
        grouped: dict[str, list[bytes]] = {}
        for item in batch:
            grouped.setdefault(item.job_id, []).extend(item.lines)
        entries: dict[str, bytes] = {}
        for job_id, lines in grouped.items():
            data = await self._capped(job_id, lines)
            if data:
                entries[job_id] = data
        # While anything waits in the spool, new lines queue behind it (each job's order
        # holds); once the spool is uploaded it is empty, and the batch goes to the store.
        if self._spooled and not await self._upload_spool():
            self._spool_all(entries)
            return
        if not entries:
            return
        try:
            await self.logs.append(entries)
        except Exception as exc:  # a log store never stops anything else
            self._failed += 1
            log.warning("log_store_failed", jobs=len(entries), error=repr(exc)[:300])
            self._retry_at = self.now() + SPOOL_RETRY
            self._spool_all(entries)
        else:
            self._shipped += 1

    async def _capped(self, job_id: str, lines: Sequence[bytes]) -> bytes:
        if job_id in self._full:
            return b""
        size = self._sizes.get(job_id)
        if size is None:
            try:
                size = await self.logs.size(job_id)
            except Exception:  # unknown while the store is down: count from here
                size = 0
            size += self._spool_size(job_id)
        out: list[bytes] = []
        for line in lines:
            if size + len(line) > self.max_bytes:
                marker = joblog.record(
                    "warning",
                    _attempt_of(line),
                    joblog.TRUNCATED,
                    source="taskflow",
                    ts=self.now(),
                    max_bytes=self.max_bytes,
                )
                out.append(joblog.encode([marker]))
                self._full.add(job_id)
                self._truncated += 1
                break
            out.append(line)
            size += len(line)
        self._sizes[job_id] = size
        self._sizes.move_to_end(job_id)
        while len(self._sizes) > 10_000:
            self._sizes.popitem(last=False)
        return b"".join(out)

    # ------------------------------------------------------------ the spool

    def _spool_all(self, entries: Mapping[str, bytes]) -> None:
        if not entries:
            return
        if self._dir is None:
            log.warning("log_lines_lost", jobs=len(entries), hint="no spool directory")
            return
        try:
            for job_id, data in entries.items():
                with (self._dir / f"{job_id}.jsonl").open("ab") as f:
                    f.write(data)
                self._spooled.add(job_id)
        except OSError as exc:
            log.error("log_spool_failed", error=str(exc), jobs=len(entries))

    def _spool_size(self, job_id: str) -> int:
        if self._dir is None or job_id not in self._spooled:
            return 0
        try:
            return (self._dir / f"{job_id}.jsonl").stat().st_size
        except OSError:
            return 0

    async def _upload_spool(self) -> bool:
        """Upload every spooled log; False (and retried later) if the store still fails."""
        if self.now() < self._retry_at or self._dir is None:
            return False
        for job_id in sorted(self._spooled):
            path = self._dir / f"{job_id}.jsonl"
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                self._spooled.discard(job_id)
                continue
            try:
                await self.logs.append({job_id: data})
            except Exception as exc:
                self._retry_at = self.now() + SPOOL_RETRY
                log.info("log_spool_waiting", jobs=len(self._spooled), error=repr(exc)[:200])
                return False
            path.unlink(missing_ok=True)
            self._spooled.discard(job_id)
            log.info("log_spool_uploaded", job_id=job_id, bytes=len(data))
        return True

    # ------------------------------------------------------------ reading

    async def read(self, job_id: str) -> LogRead:
        """The job's log from the store, then what this process still holds in its spool."""
        spooled = b""
        if self._dir is not None and job_id in self._spooled:
            try:
                spooled = (self._dir / f"{job_id}.jsonl").read_bytes()
            except OSError:
                spooled = b""
        try:
            stored = await self.logs.read(job_id) or b""
        except LogStoreError as exc:
            log.warning("log_store_unreadable", job_id=job_id, error=str(exc)[:300])
            return LogRead(data=spooled, source="spool", complete=False)
        source = self.logs.location + (" + spool" if spooled else "")
        return LogRead(data=stored + spooled, source=source, complete=True)

    async def exists(self, job_id: str) -> bool:
        """Whether the job has logged a line (in the store or this process's spool)."""
        if job_id in self._spooled:
            return True
        try:
            return await self.logs.size(job_id) > 0
        except LogStoreError:
            return False

    async def link(self, job_id: str) -> str | None:
        try:
            return await self.logs.link(job_id)
        except LogStoreError:
            return None


def _encoded(records: Sequence[LogRecord]) -> list[bytes]:
    """Each record as its JSON line."""
    return joblog.encode(records).splitlines(keepends=True) if records else []


def _attempt_of(line: bytes) -> int:
    """The attempt a JSON line belongs to (0 if it cannot be read: the marker needs one)."""
    decoded = joblog.decode(line)
    return decoded[0].attempt if decoded else 0
