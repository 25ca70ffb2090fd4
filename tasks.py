"""invoke tasks: the one entry point for humans and CI (`invoke --list`)."""

from __future__ import annotations

import os
import sys

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


@task(help={"jobs": "how many no-op jobs", "concurrency": "executors"})
def bench(c: Context, jobs: int = 20000, concurrency: int = 64) -> None:
    """In-memory throughput benchmark (perf/bench_embedded.py) on asyncio and trio."""
    c.run(f"{PY} perf/bench_embedded.py --jobs {jobs} --concurrency {concurrency}")


@task
def bench_http(c: Context) -> None:
    """HTTP submit throughput and end-to-end latency of `taskflow up` (perf/bench_http.py)."""
    c.run(f"{PY} perf/bench_http.py")
