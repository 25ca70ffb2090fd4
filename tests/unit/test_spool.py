"""The log spool: each process spools into its own locked directory and adopts the spools of
processes that are gone, never those of live ones."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from taskflow.spool import LOCK, own_spool


def test_a_dead_process_spool_is_adopted_and_a_live_one_is_left(tmp_path: Path) -> None:
    dead = tmp_path / "111-dead"
    dead.mkdir()
    (dead / LOCK).touch()
    (dead / "job-a.jsonl").write_bytes(b'{"n":1}\n')
    live = tmp_path / "222-live"
    live.mkdir()
    (live / "job-b.jsonl").write_bytes(b'{"n":2}\n')
    fd = os.open(live / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process holds it
    try:
        with own_spool(tmp_path) as mine:
            with (mine / "job-a.jsonl").open("ab") as f:
                f.write(b'{"n":3}\n')
            assert (mine / "job-a.jsonl").read_bytes() == b'{"n":1}\n{"n":3}\n'  # order kept
            assert not dead.exists()
            assert (live / "job-b.jsonl").read_bytes() == b'{"n":2}\n'
            assert not (mine / "job-b.jsonl").exists()
        assert mine.exists()  # it still holds lines: kept for the next process
        with own_spool(tmp_path) as next_one:
            assert (next_one / "job-a.jsonl").exists() and not mine.exists()
            (next_one / "job-a.jsonl").unlink()
        assert not next_one.exists()  # empty: removed on exit
    finally:
        os.close(fd)
