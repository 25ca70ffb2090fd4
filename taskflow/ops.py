"""The operators' commands behind the ``invoke`` tasks (tasks.py): each talks to the API with
``taskflow.client``, prints rich tables, and turns any error into one line and exit code 1."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from taskflow.client import ApiError, Client, DlqFilters, Job

T = TypeVar("T")


class OpsError(Exception):
    """One line for the operator (the task exits non-zero with it)."""


def guarded(call: Callable[[], T]) -> T:
    """``call()``; an API error, a timeout or a bad argument becomes ``OpsError``."""
    try:
        return call()
    except ApiError as exc:
        raise OpsError(f"error: {exc}") from None
    except TimeoutError as exc:
        raise OpsError(f"error: {exc}") from None
    except ValueError as exc:
        raise OpsError(f"error: {exc}") from None


def console() -> Console:
    """Rich output; piped (not a terminal), tables are not squeezed into 80 columns."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def payload_of(text: str | None) -> dict[str, Any] | None:
    if text is None or text == "":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--payload is not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise ValueError("--payload must be a JSON object")
    return value


def filters(
    task: str = "",
    queue: str = "",
    error_code: str = "",
    since: str = "",
    until: str = "",
    q: str = "",
) -> DlqFilters:
    return DlqFilters(
        task=task or None,
        queue=queue or None,
        error_code=error_code or None,
        since=since or None,
        until=until or None,
        text=q or None,
    )


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def job_table(jobs: Iterable[Job], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "task", "queue", "status", "attempts", "created", "error"):
        table.add_column(column)
    for job in jobs:
        error = job.error or {}
        table.add_row(
            job.id,
            job.task,
            job.queue,
            job.status,
            f"{job.attempts}/{job.max_attempts}",
            job.created_at or "",
            _short(f"{error.get('code', '')}: {error.get('message', '')}") if error else "",
        )
    return table


def job_detail(job: Job) -> list[Table]:
    facts = Table(title=f"job {job.id}", show_header=False)
    facts.add_column("field")
    facts.add_column("value")
    raw = job.raw
    for name in ("taskType", "queueName", "status", "priority", "attempts", "maxAttempts",
                 "progress", "createdAt", "startedAt", "finishedAt", "replayCount", "hasLogs"):  # fmt: skip
        if name in raw:
            facts.add_row(name, str(raw[name]))
    facts.add_row("payload", _short(raw.get("payload"), 200))
    if job.result is not None:
        facts.add_row("result", _short(job.result, 200))
    if job.error:
        facts.add_row("error", _short(f"{job.error.get('code')}: {job.error.get('message')}", 200))
    history = Table(title="attempts")
    for column in ("#", "series", "worker", "outcome", "seconds", "error"):
        history.add_column(column)
    for a in job.attempt_history:
        err = a.get("error") or {}
        history.add_row(
            str(a.get("number")),
            str(a.get("series")),
            str(a.get("worker") or ""),
            str(a.get("outcome")),
            f"{a.get('durationSeconds') or 0:.3f}",
            _short(err.get("message", "")) if err else "",
        )
    return [facts, history]


# ---------------------------------------------------------------- commands


def submit(tf: Client, task: str, payload: str, count: int, **options: Any) -> list[str]:
    body = payload_of(payload) or {}
    if count < 1:
        raise ValueError("--count must be at least 1")
    clean = {k: v for k, v in options.items() if v not in (None, "", -1)}
    return tf.submit(task, [body] * count, **clean)


def show_job(tf: Client, job_id: str, out: Console) -> None:
    for table in job_detail(tf.get(job_id)):
        out.print(table)


def replay_many(
    tf: Client, which: DlqFilters, reason: str | None, out: Console, chunk: int = 500
) -> int:
    """Replay the matching dead letters ``chunk`` at a time under a progress bar (only those
    dead before it started)."""
    started = datetime.now(UTC).isoformat()
    bounded = DlqFilters(
        task=which.task,
        queue=which.queue,
        error_code=which.error_code,
        since=which.since,
        until=which.until or started,
        text=which.text,
    )
    total = tf.replay_all(bounded, dry_run=True).matched
    done = 0
    with Progress(console=out, transient=False) as bar:
        progress = bar.add_task("replaying", total=total)
        while done < total:
            step = tf.replay_all(bounded, reason=reason, limit=min(chunk, total - done)).done
            if step == 0:
                break
            done += step
            bar.update(progress, completed=done)
    return done


def stats_tables(metrics: dict[str, Any]) -> list[Table]:
    jobs = Table(title="jobs by status")
    jobs.add_column("status")
    jobs.add_column("jobs", justify="right")
    for status, n in metrics.get("jobs_by_status", {}).items():
        jobs.add_row(status, str(n))
    rates = Table(title="throughput and latency")
    rates.add_column("measure")
    rates.add_column("value", justify="right")
    rates.add_row("succeeded/s (1 s)", f"{metrics.get('throughput_1s', 0):.1f}")
    rates.add_row("succeeded/s (60 s)", f"{metrics.get('throughput_60s', 0):.1f}")
    rates.add_row("failed/s (60 s)", f"{metrics.get('failures_60s', 0):.1f}")
    for name in ("queue_wait", "run_time", "end_to_end"):
        summary = metrics.get(name) or {}
        for p in ("p50", "p95", "p99"):
            value = summary.get(p)
            rates.add_row(f"{name} {p} (ms)", "-" if value is None else f"{value * 1000:.1f}")
    rates.add_row("workers online", str(metrics.get("workers_online", 0)))
    rates.add_row("in flight", str(metrics.get("in_flight", 0)))
    cache = metrics.get("cache") or {}
    if cache:
        rates.add_row(
            f"cache ({cache.get('backend')})",
            f"{cache.get('hits', 0)} hits / {cache.get('misses', 0)} misses",
        )
    depth = Table(title="queue depth")
    depth.add_column("queue")
    depth.add_column("ready", justify="right")
    for q, n in (metrics.get("queue_depth") or {}).items():
        depth.add_row(q, str(n))
    return [jobs, rates, depth]


def key_rows(keys: Sequence[Any]) -> Table:
    table = Table(title="API keys")
    for column in ("name", "scopes", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(k.name, ",".join(k.scopes), k.created_at or "", k.revoked_at or "")
    return table


def follow(tf: Client, job_id: str, attempt: int | None, out: Console) -> None:
    for line in tf.follow_logs(job_id, attempt=attempt):
        out.print(line, markup=False)
