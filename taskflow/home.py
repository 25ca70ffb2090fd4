"""One owner per home: ``taskflow up`` holds an exclusive lock on ``TASKFLOW_HOME``.

The lock is an ``flock`` on ``<home>/taskflow.lock``, taken before anything else (the embedded
PostgreSQL, migrations, start-up recovery), and released by the kernel when the process ends,
however it ends (a ``kill -9`` included), so a stale lock never blocks a restart. The file
holds the owner's PID, for the message a second process prints.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taskflow.errors import ConfigError

LOCK_NAME = "taskflow.lock"


class HomeInUse(ConfigError):
    """Another TaskFlow process owns this home."""

    code = "home_in_use"


@contextmanager
def home_lock(home: Path) -> Iterator[Path]:
    """Hold ``home`` for this process; ``HomeInUse`` naming the holder's PID if another has it."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise HomeInUse(
                f"{home.resolve()} is in use by another taskflow process (pid {holder}); "
                "stop it first, or give this one its own TASKFLOW_HOME",
                pid=holder,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
