"""Log shipper: job log lines leave the outcome path and reach the LogStore on their own.

The executor pool hands each finished attempt's lines to ``ship`` (an ``after_attempt`` hook:
synchronous, never blocking, never raising). A full buffer drops the batch and counts it; a
log store that fails (``LogStoreError``, or anything else it raises) is logged and counted.
Either way outcomes are recorded as usual and no attempt is burned because of logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from taskflow.log import get_logger
from taskflow.messages import AttemptFinished
from taskflow.ports import LogStore
from taskflow.streams import receive_batch

log = get_logger("taskflow.logship")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShipLines:
    """Internal command: append ``lines`` to the log of ``job_id``'s attempt ``attempt``."""

    job_id: str
    attempt: int
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LogShipperStats:
    shipped: int
    """Batches of lines the log store accepted."""
    failed: int
    """Batches the log store refused or failed on (the lines are lost; the jobs are not)."""
    dropped: int
    """Batches dropped because the buffer was full (the log store is too slow)."""


@dataclass(kw_only=True)
class LogShipper:
    """Inputs: ShipLines (through ``ship``). Outputs: LogStore appends. Restart: permanent.
    State: the bounded buffer of lines not yet written."""

    logs: LogStore
    buffer: int = 4096
    _send: MemoryObjectSendStream[ShipLines] = field(init=False, repr=False)
    _receive: MemoryObjectReceiveStream[ShipLines] = field(init=False, repr=False)
    _busy: int = field(default=0, init=False)
    _shipped: int = field(default=0, init=False)
    _failed: int = field(default=0, init=False)
    _dropped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[ShipLines](self.buffer)

    def ship(self, outcome: AttemptFinished) -> None:
        """The ``after_attempt`` hook: queue the attempt's lines, if it logged any."""
        if not outcome.log_lines:
            return
        command = ShipLines(job_id=outcome.job_id, attempt=outcome.attempt, lines=outcome.log_lines)
        try:
            self._send.send_nowait(command)
        except anyio.WouldBlock:
            self._dropped += 1
            log.warning("log_lines_dropped", job_id=outcome.job_id, lines=len(outcome.log_lines))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._dropped += 1

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                batch = await receive_batch(self._receive, 256)
            except anyio.EndOfStream:
                return
            self._busy = len(batch)
            await self._write(batch)
            self._busy = 0

    async def stop(self) -> None:
        """Take no more lines; ``run`` returns once what is queued is written."""
        self._send.close()

    def close(self) -> None:
        self._send.close()
        self._receive.close()

    def backlog(self) -> int:
        """Batches queued or being written."""
        return self._receive.statistics().current_buffer_used + self._busy

    def statistics(self) -> LogShipperStats:
        return LogShipperStats(shipped=self._shipped, failed=self._failed, dropped=self._dropped)

    async def _write(self, batch: Sequence[ShipLines]) -> None:
        for item in batch:
            try:
                await self.logs.append(item.job_id, item.attempt, item.lines)
            except Exception as exc:  # a log store never stops anything else
                self._failed += 1
                log.warning("log_lines_not_saved", job_id=item.job_id, error=repr(exc)[:300])
            else:
                self._shipped += 1
