"""JobContext: progress reporting (clamped, thread-safe), captured log lines, cancellation."""

from __future__ import annotations

import threading
import time

import pytest
from structlog.testing import capture_logs

from taskflow import joblog
from taskflow.context import JobContext

Call = tuple[str, int, float, "str | None"]


class Sink:
    """Records every progress call and the thread that made it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.threads: list[int] = []

    def __call__(self, job_id: str, attempt: int, pct: float, message: str | None) -> None:
        self.calls.append((job_id, attempt, pct, message))
        self.threads.append(threading.get_ident())


def make_ctx(sink: Sink | None = None) -> JobContext:
    return JobContext(job_id="job-7", attempt=2, task="resize", _sink=sink)


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(-5, 0.0), (0, 0.0), (12.5, 12.5), (100, 100.0), (250, 100.0), (float("inf"), 100.0)],
)
def test_progress_is_clamped_and_sent_to_the_sink(percent: float, expected: float) -> None:
    sink = Sink()
    make_ctx(sink).progress(percent, "resizing")
    assert sink.calls == [("job-7", 2, expected, "resizing")]
    assert isinstance(sink.calls[0][2], float)


def test_progress_message_is_optional() -> None:
    sink = Sink()
    ctx = make_ctx(sink)
    ctx.progress(10)
    ctx.progress(20, "half")
    assert sink.calls == [("job-7", 2, 10.0, None), ("job-7", 2, 20.0, "half")]


def test_progress_without_a_sink_is_a_no_op() -> None:
    make_ctx(None).progress(50, "nobody listens")  # must not raise


def test_progress_from_a_worker_thread() -> None:
    sink = Sink()
    ctx = make_ctx(sink)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for pct in (25, 50, 75, 100):
                ctx.progress(pct, f"step {pct}")
            ctx.log.info("worker_done", steps=4)
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=10)

    assert not thread.is_alive()
    assert errors == []
    assert [c[2] for c in sink.calls] == [25.0, 50.0, 75.0, 100.0]
    assert set(sink.threads) == {thread.ident}
    assert thread.ident != threading.get_ident()
    assert shown(ctx) == ["info worker_done {'steps': 4}"]


def test_log_lines_are_captured_in_order() -> None:
    ctx = make_ctx()
    with capture_logs() as events:
        ctx.log.debug("loading", path="cat.png")
        ctx.log.info("resized")
        ctx.log.warning("slow", seconds=2.5)
        ctx.log.error("upload_failed", status=503, retry=True)

    assert shown(ctx) == [
        "debug loading {'path': 'cat.png'}",
        "info resized {}",
        "warning slow {'seconds': 2.5}",
        "error upload_failed {'status': 503, 'retry': True}",
    ]
    # Each line also goes to structlog with the job's identity bound.
    assert [e["event"] for e in events] == ["loading", "resized", "slow", "upload_failed"]
    assert all((e["job_id"], e["attempt"], e["task"]) == ("job-7", 2, "resize") for e in events)


def test_bound_logger_shares_the_lines() -> None:
    ctx = make_ctx()
    with capture_logs() as events:
        ctx.log.bind(step="upload").info("started")
    assert shown(ctx) == ["info started {'step': 'upload'}"]
    assert events[0]["step"] == "upload"


def test_log_lines_hands_each_record_once() -> None:
    ctx = make_ctx()
    with capture_logs():
        ctx.log.info("one")
    lines = ctx.log_lines()
    assert [r.message for r in joblog.decode("\n".join(lines).encode())] == ["one"]
    assert ctx.log_lines() == []  # taken: the log shipper writes each record once


def shown(ctx: JobContext) -> list[str]:
    """The records the context holds, as ``level message fields``."""
    records = joblog.decode("\n".join(ctx.log_lines()).encode())
    assert all(r.attempt == ctx.attempt and r.source == "task" for r in records)
    return [f"{r.level} {r.message} {r.fields}" for r in records]


def test_contexts_do_not_share_lines() -> None:
    first, second = make_ctx(), make_ctx()
    with capture_logs():
        first.log.info("mine")
    assert second.log_lines() == []


def test_cancelled_flag() -> None:
    ctx = JobContext(job_id="job-7", attempt=1, task="resize")
    assert ctx.cancelled is False
    ctx.cancel()
    assert ctx.cancelled is True


def test_cancelled_is_seen_from_a_worker_thread() -> None:
    ctx = make_ctx()
    seen = threading.Event()

    def work() -> None:
        while not ctx.cancelled:
            time.sleep(0.001)
        seen.set()

    thread = threading.Thread(target=work)
    thread.start()
    ctx.cancel()
    thread.join(timeout=10)
    assert seen.is_set()
