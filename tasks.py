"""invoke tasks: the one entry point for humans and CI (`invoke --list`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from invoke import Collection, Context, task

PY = sys.executable


@task
def lint(c: Context) -> None:
    """ruff lint and format check."""
    c.run(f"{PY} -m ruff check .")
    c.run(f"{PY} -m ruff format --check .")


@task
def typecheck(c: Context) -> None:
    """mypy --strict over taskflow/, actors/, web/."""
    c.run(f"{PY} -m mypy")


@task(
    help={
        "k": "only tests matching this expression",
        "x": "stop at the first failure",
        "faults": "also the fault scenarios that stop/restart the machine's RabbitMQ and PostgreSQL",
    }
)
def test(c: Context, k: str = "", x: bool = False, faults: bool = False) -> None:
    """The whole test suite (the README's test command); it leaves the machine's services
    alone unless --faults is given (CI gives it)."""
    args = ["-q"]
    if faults:
        args.append("--faults")
    if k:
        args += ["-k", repr(k)]
    if x:
        args.append("-x")
    c.run(f"{PY} -m pytest {' '.join(args)}", pty=False)


@task(help={"faults": "also the disruptive fault scenarios (CI gives it)"})
def check(c: Context, faults: bool = False) -> None:
    """lint, typecheck, test: what CI runs (`invoke check --faults`)."""
    lint(c)
    typecheck(c)
    test(c, faults=faults)


@task
def fmt(c: Context) -> None:
    """Format and autofix."""
    c.run(f"{PY} -m ruff format .")
    c.run(f"{PY} -m ruff check --fix .")


@task(help={"rollback": "roll back the last N migrations instead", "show": "list applied ones"})
def migrate(c: Context, rollback: int = 0, show: bool = False) -> None:
    """Apply pending database migrations (TASKFLOW_DATABASE_URL, or the embedded server)."""
    flags = " --list" if show else (f" --rollback {rollback}" if rollback else "")
    c.run(f"{PY} -m taskflow migrate{flags}")


@task(help={"host": "bind address", "port": "port", "dashboard": "also the Panel dashboard (5006)"})
def up(c: Context, host: str = "127.0.0.1", port: int = 8000, dashboard: bool = False) -> None:
    """Run TaskFlow in one process on the embedded defaults (`taskflow up`).

    This process becomes `taskflow up` (exec): signals reach it directly, so Ctrl-C or
    SIGTERM drain it gracefully (the embedded PostgreSQL stops with it), and its exit code is
    this command's."""
    sys.stdout.flush()
    extra = ["--dashboard"] if dashboard else []
    os.execv(PY, [PY, "-m", "taskflow", "up", "--host", host, "--port", str(port), *extra])


@task(
    help={
        "url": "the API whose metrics stream it reads (TASKFLOW_URL, else http://127.0.0.1:8000)",
        "port": "the dashboard's port (TASKFLOW_DASHBOARD_PORT, else 5006)",
    }
)
def dashboard(c: Context, url: str = "", port: int = 0) -> None:
    """The live Panel dashboard (`taskflow dashboard`) on http://127.0.0.1:5006/dashboard;
    a key in TASKFLOW_KEY when the API requires keys."""
    sys.stdout.flush()
    args = [PY, "-m", "taskflow", "dashboard"]
    args += ["--api-url", url] if url else []
    args += ["--port", str(port)] if port else []
    os.execv(PY, args)


@task(
    help={
        "repeat": "repetitions, interleaved (3)",
        "jobs": "jobs per workload (10000)",
        "only": "systems, comma-separated (taskflow,celery,celery-threads,dramatiq,dramatiq-threads)",
        "workloads": "comma-separated (w1,w2,w3,w4,w5,startup)",
        "out": "JSON file of every sample (perf/results/suite.json)",
    }
)
def bench(
    c: Context,
    repeat: int = 3,
    jobs: int = 10000,
    only: str = "",
    workloads: str = "",
    out: str = "perf/results/suite.json",
) -> None:
    """The benchmark suite (perf/suite.py): TaskFlow against Celery and Dramatiq on this
    machine's RabbitMQ and PostgreSQL (needs the `bench` extra and Redis)."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    args = f"--repeat {repeat} --jobs {jobs} --out {out}"
    args += f" --only {only}" if only else ""
    args += f" --workloads {workloads}" if workloads else ""
    c.run(f"{PY} perf/suite.py {args}", pty=False)


@task(help={"jobs": "how many no-op jobs", "concurrency": "executors"})
def bench_embedded(c: Context, jobs: int = 20000, concurrency: int = 64) -> None:
    """In-memory throughput benchmark (perf/bench_embedded.py) on asyncio and trio."""
    c.run(f"{PY} perf/bench_embedded.py --jobs {jobs} --concurrency {concurrency}")


@task(
    help={
        "users": "concurrent Locust users (20)",
        "time": "run time, like 60s or 5m (60s)",
        "host": "the API's base URL (http://127.0.0.1:8000)",
        "csv": "prefix of Locust's CSV stats (perf/results/load)",
    }
)
def load(
    c: Context,
    users: int = 20,
    time: str = "60s",
    host: str = "http://127.0.0.1:8000",
    csv: str = "perf/results/load",
) -> None:
    """Locust, headless, against a running server (perf/locustfile.py); writes CSV stats."""
    Path(csv).parent.mkdir(parents=True, exist_ok=True)
    spawn = max(1, users // 5)
    c.run(
        f"{PY} -m locust -f perf/locustfile.py --headless --users {users}"
        f" --spawn-rate {spawn} --run-time {time} --host {host} --csv {csv} --only-summary"
    )


@task
def bench_http(c: Context) -> None:
    """HTTP submit throughput and end-to-end latency of `taskflow up` (perf/bench_http.py)."""
    c.run(f"{PY} perf/bench_http.py")


@task(
    help={
        "jobs": "queued no-op jobs per sample (10000)",
        "subscribers": "SSE subscribers (200)",
        "repeat": "repetitions, interleaved (3)",
    }
)
def bench_streams(c: Context, jobs: int = 10000, subscribers: int = 200, repeat: int = 3) -> None:
    """What live SSE subscribers cost an API process: broker queues and connections, and the
    drain of one worker with and without them (perf/bench_streams.py)."""
    c.run(
        f"{PY} perf/bench_streams.py --jobs {jobs} --subscribers {subscribers}"
        f" --repeat {repeat} --out perf/results/streams.json",
        pty=False,
    )


@task
def bench_auth(c: Context) -> None:
    """The cost per request of API keys and rate limits, on and off (perf/bench_auth.py)."""
    c.run(f"{PY} perf/bench_auth.py")


# ---------------------------------------------------------------- operators' commands
# Each takes --url and --key (else TASKFLOW_URL, TASKFLOW_KEY) and talks to the API with
# taskflow.client; any error is one line on stderr and exit code 1.

URL = {"url": "the API (TASKFLOW_URL, else http://127.0.0.1:8000)", "key": "API key (TASKFLOW_KEY)"}
FILTER_HELP = {
    "task": "task type",
    "queue": "queue name",
    "error_code": "error code of the last error",
    "since": "died at or after (ISO-8601 or epoch seconds)",
    "until": "died before",
    "q": "a job id, or text in the error or payload",
}


def _ops(url: str, key: str, body: Any) -> None:
    """Run ``body(client, console)``; an error exits 1 with one line."""
    from invoke.exceptions import Exit

    from taskflow.client import Client
    from taskflow.ops import OpsError, console, guarded

    try:
        with Client(url or None, key or None) as tf:
            guarded(lambda: body(tf, console()))
    except OpsError as exc:
        raise Exit(str(exc), code=1) from None


@task(help={**URL, "payload": "JSON object (default {})", "count": "how many jobs (1)",
            "queue": "queue", "priority": "0-9", "delay": "seconds",
            "idempotency_key": "Idempotency-Key"})  # fmt: skip
def jobs_submit(
    c: Context,
    task_type: str,
    payload: str = "{}",
    count: int = 1,
    queue: str = "",
    priority: int = -1,
    delay: float = -1,
    idempotency_key: str = "",
    url: str = "",
    key: str = "",
) -> None:
    """Submit COUNT jobs of TASK_TYPE; prints their ids, one per line."""
    from taskflow import ops

    def body(tf: Any, out: Any) -> None:
        ids = ops.submit(
            tf,
            task_type,
            payload,
            count,
            queue=queue or None,
            priority=priority if priority >= 0 else None,
            delay=delay if delay >= 0 else None,
            idempotency_key=idempotency_key or None,
        )
        for job_id in ids:
            print(job_id)

    _ops(url, key, body)


@task(help={**URL, "status": "status", "task": "task type", "queue": "queue", "limit": "rows (20)"})
def jobs_list(
    c: Context, status: str = "", task: str = "", queue: str = "", limit: int = 20,
    url: str = "", key: str = ""
) -> None:  # fmt: skip
    """The newest jobs as a table."""
    from taskflow import ops

    def body(tf: Any, out: Any) -> None:
        page = tf.list(status=status or None, task=task or None, queue=queue or None, limit=limit)
        out.print(ops.job_table(page.jobs, "jobs"))

    _ops(url, key, body)


@task(help=URL)
def jobs_show(c: Context, job_id: str, url: str = "", key: str = "") -> None:
    """One job: its fields and attempt history."""
    from taskflow import ops

    _ops(url, key, lambda tf, out: ops.show_job(tf, job_id, out))


@task(help=URL)
def jobs_cancel(c: Context, job_id: str, url: str = "", key: str = "") -> None:
    """Cancel a job (a running one is cancelled shortly after)."""

    def body(tf: Any, out: Any) -> None:
        job = tf.cancel(job_id)
        print(
            f"{job.id}: {job.status}"
            + (" (cancel requested)" if job.raw.get("cancelRequested") else "")
        )

    _ops(url, key, body)


@task(help={**URL, "follow": "stream new lines until the job ends", "attempt": "one attempt"})
def jobs_logs(
    c: Context, job_id: str, follow: bool = False, attempt: int = 0, url: str = "", key: str = ""
) -> None:
    """A job's log (with --follow, live until it ends)."""
    from taskflow import ops

    def body(tf: Any, out: Any) -> None:
        if follow:
            ops.follow(tf, job_id, attempt or None, out)
        else:
            print(tf.logs(job_id, attempt=attempt or None), end="")

    _ops(url, key, body)


@task(help={**URL, **FILTER_HELP, "limit": "rows (20)"})
def dlq_list(
    c: Context, task: str = "", queue: str = "", error_code: str = "", since: str = "",
    until: str = "", q: str = "", limit: int = 20, url: str = "", key: str = ""
) -> None:  # fmt: skip
    """Dead letters, newest first, as a table."""
    from taskflow import ops

    which = ops.filters(task, queue, error_code, since, until, q)
    _ops(
        url,
        key,
        lambda tf, out: out.print(
            ops.job_table(tf.dlq_list(which, limit=limit).jobs, "dead letters")
        ),
    )


@task(help=URL)
def dlq_show(c: Context, job_id: str, url: str = "", key: str = "") -> None:
    """One dead letter with its attempt history."""
    from taskflow import ops

    def body(tf: Any, out: Any) -> None:
        for table in ops.job_detail(tf.dlq_show(job_id)):
            out.print(table)

    _ops(url, key, body)


@task(help={**URL, **FILTER_HELP, "payload": "corrected payload (one job only)",
            "reason": "why (recorded)", "dry_run": "count only"})  # fmt: skip
def dlq_replay(
    c: Context, job_id: str = "", payload: str = "", reason: str = "", task: str = "",
    queue: str = "", error_code: str = "", since: str = "", until: str = "", q: str = "",
    dry_run: bool = False, url: str = "", key: str = ""
) -> None:  # fmt: skip
    """Replay one dead letter (--job-id, optionally with --payload), or every one matching
    the filters, with a progress bar."""
    from taskflow import ops

    def body(tf: Any, out: Any) -> None:
        if job_id:
            job = tf.replay(job_id, payload=ops.payload_of(payload), reason=reason or None)
            print(f"{job.id}: {job.status} (replay {job.raw.get('replayCount')})")
            return
        if payload:
            raise ValueError("--payload replays one job: give --job-id")
        which = ops.filters(task, queue, error_code, since, until, q)
        if dry_run:
            print(f"{tf.replay_all(which, dry_run=True).matched} dead letters match")
            return
        print(f"replayed {ops.replay_many(tf, which, reason or None, out)}")

    _ops(url, key, body)


@task(help={**URL, **FILTER_HELP, "all": "every dead letter (required without a filter)",
            "dry_run": "count only"})  # fmt: skip
def dlq_purge(
    c: Context, task: str = "", queue: str = "", error_code: str = "", since: str = "",
    until: str = "", q: str = "", all: bool = False, dry_run: bool = False,
    url: str = "", key: str = ""
) -> None:  # fmt: skip
    """Delete dead letters (and their logs) matching the filters."""
    from taskflow import ops

    def body(tf: Any, out: Any) -> None:
        result = tf.purge(
            ops.filters(task, queue, error_code, since, until, q), all=all, dry_run=dry_run
        )
        print(f"{result.matched} dead letters match" if dry_run else f"purged {result.done}")

    _ops(url, key, body)


@task(help={**URL, "scopes": "comma-separated: read, submit, admin (read)"})
def keys_create(c: Context, name: str, scopes: str = "read", url: str = "", key: str = "") -> None:
    """Create an API key (admin); the key alone is the last line."""

    def body(tf: Any, out: Any) -> None:
        created = tf.create_key(name, [s.strip() for s in scopes.split(",") if s.strip()])
        print(
            f"created API key {created.name!r} with scopes {','.join(created.scopes)}; shown only now:"
        )
        print(created.secret)

    _ops(url, key, body)


@task(help={**URL, "revoked": "revoked keys too"})
def keys_list(c: Context, revoked: bool = False, url: str = "", key: str = "") -> None:
    """API keys (never the keys themselves)."""
    from taskflow import ops

    _ops(url, key, lambda tf, out: out.print(ops.key_rows(tf.list_keys(revoked=revoked))))


@task(help=URL)
def keys_revoke(c: Context, name: str, url: str = "", key: str = "") -> None:
    """Revoke an API key (refused by every API process within 5 s)."""

    def body(tf: Any, out: Any) -> None:
        print(f"revoked API key {tf.revoke_key(name).name!r}")

    _ops(url, key, body)


@task(help=URL)
def stats(c: Context, url: str = "", key: str = "") -> None:
    """The metrics as tables: jobs by status, throughput, latency, workers, queues, cache."""
    from taskflow import ops

    def body(tf: Any, out: Any) -> None:
        for table in ops.stats_tables(tf.metrics()):
            out.print(table)

    _ops(url, key, body)


@task(help=URL)
def cleanup(c: Context, url: str = "", key: str = "") -> None:
    """Retention now: delete every terminal job past its retention (admin)."""
    _ops(url, key, lambda tf, out: print(f"deleted {tf.cleanup()} expired jobs"))


def _named(name: str, *tasks_: Any) -> Collection:
    sub = Collection(name)
    for t in tasks_:
        sub.add_task(t, name=t.name.split("_", 1)[1].replace("_", "-"))
    return sub


ns = Collection(
    lint, typecheck, test, check, fmt, migrate, up, dashboard, bench, bench_embedded, load,
    bench_http, bench_auth, bench_streams, stats, cleanup,
)  # fmt: skip
ns.add_collection(_named("jobs", jobs_submit, jobs_list, jobs_show, jobs_cancel, jobs_logs))
ns.add_collection(_named("dlq", dlq_list, dlq_show, dlq_replay, dlq_purge))
ns.add_collection(_named("keys", keys_create, keys_list, keys_revoke))
