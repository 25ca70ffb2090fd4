"""Logs leave the hot path: a failing or slow log store never stops outcomes or burns an
attempt; the LogStore port reports failures as ``LogStoreError``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors.logship import LogShipper
from actors.runtime import open_runtime
from actors.tree import TreeConfig
from taskflow import JobContext, TaskRegistry, joblog
from taskflow.clock import AnyioClock
from taskflow.errors import LogStoreError
from taskflow.files import FileLogStore, thread_switches
from taskflow.jobs import JobStatus
from taskflow.memory import MemoryEventBus, MemoryJobStore, MemoryTransport
from taskflow.messages import AttemptSucceeded
from taskflow.resources import Resources

pytestmark = pytest.mark.anyio


class BrokenLogStore:
    """A LogStore whose disk is gone: every append fails."""

    def __init__(self) -> None:
        self.calls = 0

    location = "broken"

    async def append(self, entries: Mapping[str, bytes]) -> None:
        self.calls += 1
        raise LogStoreError("the disk is gone")

    async def read(self, job_id: str) -> bytes | None:
        return None

    async def size(self, job_id: str) -> int:
        return 0

    async def delete(self, job_ids: Sequence[str]) -> None:
        return None

    async def link(self, job_id: str) -> str | None:
        return None


async def test_a_failing_log_store_never_stops_outcomes_nor_burns_an_attempt() -> None:
    registry = TaskRegistry()

    @registry.task(name="chatty", max_attempts=1)
    async def chatty(payload: dict[str, Any], ctx: JobContext) -> int:
        ctx.log.info("working", n=payload["n"])
        if payload["n"] % 5 == 0:
            raise ValueError("fails, and its lines are lost too")
        return int(payload["n"])

    store, logs = MemoryJobStore(), BrokenLogStore()
    res = Resources(
        store=store,
        queries=store,
        transport=MemoryTransport(),
        events=MemoryEventBus(),
        logs=logs,
        clock=AnyioClock(),
    )
    async with open_runtime(registry, res, TreeConfig(concurrency=4, shutdown_grace=1.0)) as rt:
        with anyio.fail_after(20):
            ids = [await rt.submit("chatty", {"n": n}) for n in range(1, 31)]
            jobs = [await rt.wait(i) for i in ids]
            await rt.wait_idle()
        stats = rt.tree.logs.statistics()
    assert [(j.status, j.attempts) for j in jobs if j.payload["n"] % 5] == [
        (JobStatus.COMPLETED, 1)
    ] * 24
    assert {(j.status, j.attempts) for j in jobs if j.payload["n"] % 5 == 0} == {
        (JobStatus.FAILED, 1)
    }
    # every job's lines (and its lifecycle lines) were offered, in batches, and lost
    assert logs.calls >= 1 and stats.failed == logs.calls and stats.shipped == 0


def _succeeded(job_id: str, n: int, *messages: str) -> AttemptSucceeded:
    lines = tuple(
        joblog.encode([joblog.record("info", 1, m, source="task", ts=0.0)]).decode().rstrip("\n")
        for m in messages
    )
    return AttemptSucceeded(
        job_id=job_id,
        task="t",
        attempt=1,
        at=0.0,
        started_at=0.0,
        created_at=0.0,
        delivery_tag=n,
        log_lines=lines,
    )


async def test_a_slow_store_gets_every_line_in_order_through_the_overflow() -> None:
    logs = SizedLogStore({})
    shipper = LogShipper(logs=logs, buffer=2)
    for n in range(300):  # far more batches than the queue holds, two per job
        shipper.ship(_succeeded(f"j{n % 150}", n, f"line {n}"))
    assert shipper.backlog() == 300
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(shipper.run)
            shipper.ship(_succeeded("j0", 300, "after the overflow"))  # behind it, in order
            await shipper.stop()
    finally:
        shipper.close()
    assert shipper.statistics().dropped == 0 and shipper.backlog() == 0
    for n in range(150):
        records = joblog.decode(logs.data[f"j{n}"])
        messages = [r.message for r in records if r.source == "task"]
        later = ["after the overflow"] if n == 0 else []
        assert messages == [f"line {n}", f"line {n + 150}", *later]


async def test_a_full_buffer_and_overflow_drop_lines_and_count_them() -> None:
    shipper = LogShipper(logs=BrokenLogStore(), buffer=2, overflow_bytes=0)
    try:
        for n in range(5):
            shipper.ship(_succeeded(f"j{n}", n, "x"))
        shipper.ship(_succeeded("quiet", 9))
        # each attempt ships at least its ending line: 6 batches for a buffer of 2
        assert shipper.statistics().dropped == 4
        assert shipper.backlog() == 2
    finally:
        shipper.close()


async def test_the_file_log_store_keeps_odd_text_and_reports_failures(tmp_path: Path) -> None:
    logs = FileLogStore(tmp_path / "logs")
    record = joblog.record("info", 1, "lone \ud800 surrogate, nul \x00 kept", source="task", ts=1.0)
    await logs.append({"job-1": joblog.encode([record])})
    data = await logs.read("job-1")
    assert data is not None
    (back,) = joblog.decode(data)
    assert back.message == "lone \\ud800 surrogate, nul \x00 kept"  # the escape is kept
    assert await logs.size("job-1") == len(data)
    (tmp_path / "blocked").write_text("a file where the folder should be")
    with pytest.raises(LogStoreError, match="cannot write job logs"):
        await FileLogStore(tmp_path / "blocked").append({"job-2": b"x\n"})
    with pytest.raises(LogStoreError):
        await logs.append({"../escape": b"x\n"})


async def test_the_file_log_store_writes_on_the_loop_until_a_slice_is_slow(tmp_path: Path) -> None:
    fast = FileLogStore(tmp_path / "fast")
    await fast.append({f"job-{i}": b'{"n":%d}\n' % i for i in range(100)})  # 4 slices
    assert not fast.in_thread
    assert await fast.read("job-99") == b'{"n":99}\n'

    slow = FileLogStore(tmp_path / "slow", slow_slice=-1.0, stall=-1.0)  # every slice stalls
    await slow.append({"job-a": b"1\n"})
    assert slow.in_thread  # the next minute of appends goes to a worker thread
    await slow.append({"job-a": b"2\n", **{f"job-{i}": b"x\n" for i in range(70)}})
    await slow.append({"job-a": b"3\n"})
    assert await slow.read("job-a") == b"1\n2\n3\n"  # same order, whichever thread wrote
    assert await slow.read("job-69") == b"x\n"
    slow._thread_until = 0.0
    assert not slow.in_thread


class Switched:
    """Context switches as a slice would see them: each call adds ``step``."""

    def __init__(self, step: tuple[int, int]) -> None:
        self.step, self.now = step, (0, 0)

    def __call__(self) -> tuple[int, int]:
        self.now = (self.now[0] + self.step[0], self.now[1] + self.step[1])
        return self.now


async def test_one_slow_slice_or_a_preempted_one_keeps_the_appends_on_the_loop(
    tmp_path: Path,
) -> None:
    # Involuntary switches and no voluntary one: a busy CPU, not a slow disk, however long.
    busy = FileLogStore(tmp_path / "busy", slow_slice=-1.0, stall=-1.0, switches=Switched((0, 1)))
    await busy.append({f"job-{i}": b"x\n" for i in range(100)})  # 4 slices
    assert not busy.in_thread
    assert busy.preempted_slices == 4
    # Slices that waited (a voluntary switch), but below the stall: a run of 3 is needed.
    waited = FileLogStore(
        tmp_path / "waited", slow_slice=-1.0, stall=60.0, switches=Switched((1, 1))
    )
    await waited.append({"job-a": b"1\n"})
    await waited.append({"job-a": b"2\n"})
    assert not waited.in_thread  # two slow slices: a busy moment, not a slow disk
    waited.slow_slice = 60.0
    await waited.append({"job-a": b"3\n"})  # a fast one between: the count starts again
    waited.slow_slice = -1.0
    await waited.append({"job-a": b"4\n"})
    await waited.append({"job-a": b"5\n"})
    assert not waited.in_thread  # slow, slow, fast, slow, slow: a busy machine
    await waited.append({"job-a": b"6\n"})
    assert waited.in_thread  # three in a row: the disk is slow
    assert waited.preempted_slices == 0
    assert await waited.read("job-a") == b"1\n2\n3\n4\n5\n6\n"
    # The real counter reads this thread's switches (Linux), never going down.
    before = thread_switches()
    after = thread_switches()
    assert after[0] >= before[0] and after[1] >= before[1]


class SizedLogStore(BrokenLogStore):
    """A LogStore that works, holds ``existing`` logs, and counts the sizes it was asked."""

    def __init__(self, existing: Mapping[str, bytes]) -> None:
        super().__init__()
        self.data = dict(existing)
        self.sized: list[str] = []

    async def append(self, entries: Mapping[str, bytes]) -> None:
        for job_id, data in entries.items():
            self.data[job_id] = self.data.get(job_id, b"") + data

    async def size(self, job_id: str) -> int:
        self.sized.append(job_id)
        return len(self.data.get(job_id, b""))


async def test_the_cap_counts_a_log_written_before_and_only_such_a_log_is_sized() -> None:
    # Given a job that logged 300 bytes in an earlier attempt (replayed, released or retried)
    # and a job on its first attempt ever; both attempts log about 250 bytes, the cap is 400
    logs = SizedLogStore({"old": b"x" * 300})
    shipper = LogShipper(logs=logs, max_bytes=400)
    async with anyio.create_task_group() as tg:
        await tg.start(shipper.run)
        for n, (job_id, first) in enumerate((("new", True), ("old", False))):
            shipper.watch(JobContext(job_id=job_id, attempt=1, task="t", _log_empty=first))
            shipper.ship(_succeeded(job_id, n))
        await shipper.stop()  # run returns once what is queued is written
    shipper.close()
    # Then only the old log was sized in the store, and only it reached the cap
    assert logs.sized == ["old"]
    assert b"log truncated" in logs.data["old"]
    new = joblog.decode(logs.data["new"])
    assert [r.message for r in new] == ["attempt 1 started", "attempt 1 completed in 0.000 s"]
