"""The log spool: local files holding job log lines while the log store fails.

Each process spools into its own directory ``<root>/<pid>-<random>``, held with an ``flock``
on its ``.lock`` (released by the kernel however the process ends). At start a process adopts
the directories of processes that are gone (their lock is free): their lines are appended to
its own spool and uploaded with it, so nothing spooled is lost across a crash, and two live
processes never upload the same lines.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taskflow.log import get_logger

log = get_logger("taskflow.spool")
LOCK = ".lock"


@contextmanager
def own_spool(root: Path) -> Iterator[Path]:
    """This process's spool directory under ``root``, with the orphans of former processes."""
    mine = root / f"{os.getpid()}-{secrets.token_hex(4)}"
    mine.mkdir(parents=True, exist_ok=True)
    fd = os.open(mine / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for other in sorted(p for p in root.iterdir() if p.is_dir() and p != mine):
            _adopt(other, mine)
        yield mine
    finally:
        os.close(fd)
        if not any(p.suffix == ".jsonl" for p in mine.iterdir()):
            shutil.rmtree(mine, ignore_errors=True)


def _adopt(other: Path, mine: Path) -> None:
    try:
        fd = os.open(other / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its process is alive: its spool is its own
        moved = 0
        for path in sorted(other.glob("*.jsonl")):
            with (mine / path.name).open("ab") as out:
                out.write(path.read_bytes())
            path.unlink()
            moved += 1
        if moved:
            log.info("log_spool_adopted", directory=str(other), jobs=moved)
    finally:
        os.close(fd)
    shutil.rmtree(other, ignore_errors=True)
