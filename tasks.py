"""invoke tasks: the one entry point for humans and CI (`invoke --list`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from invoke import Context, task

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


@task(help={"host": "bind address", "port": "port"})
def up(c: Context, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run TaskFlow in one process on the embedded defaults (`taskflow up`).

    This process becomes `taskflow up` (exec): signals reach it directly, so Ctrl-C or
    SIGTERM drain it gracefully (the embedded PostgreSQL stops with it), and its exit code is
    this command's."""
    sys.stdout.flush()
    os.execv(PY, [PY, "-m", "taskflow", "up", "--host", host, "--port", str(port)])


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
