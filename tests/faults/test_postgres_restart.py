"""Scenario 3 of the fault suite: PostgreSQL restarted mid-run (`pg_ctlcluster ... restart`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.faults.harness import query
from tests.faults.streaming import check, run_through
from tests.rabbit import Vhost

pytestmark = [pytest.mark.timeout(300), pytest.mark.disruptive]


def cluster_of(pg_url: str) -> tuple[str, str]:
    """The local cluster (version, name) serving ``pg_url``, or skip (fail under CI)."""
    why = None
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        why = "pg_ctlcluster is not installed"
    elif urlsplit(pg_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        why = "the test database is not on this machine"
    elif os.geteuid() != 0:
        why = "restarting the cluster needs root"
    else:
        port = str(urlsplit(pg_url).port or 5432)
        listing = subprocess.run(
            ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
        ).stdout
        for line in listing.splitlines():
            version, name, cport, status, *_ = line.split()
            if cport == port and status == "online":
                return version, name
        why = f"no online cluster on port {port}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the PostgreSQL restart scenario cannot run: {why}")
    pytest.skip(why)


def started_at(pg_url: str) -> Any:
    (at,) = query(pg_url, "SELECT pg_postmaster_start_time()")[0]
    return at


@pytest.mark.parametrize("down", [0.0, 8.0], ids=["restart", "down-8s"])
def test_postgresql_restarted_mid_run_loses_nothing(
    tmp_path: Path,
    pg_url: str,
    rabbit_vhost: Vhost,
    capsys: pytest.CaptureFixture[str],
    down: float,
) -> None:
    """Every connection of every process is cut: a fast restart, and a stop with the server
    down for 8 s (longer than the 5 s a call waits for a connection) before it starts again.
    Submissions the API cannot make durable are refused with 503 and Retry-After; workers
    hold their outcomes and retry the database with backoff (no job attempt is spent on
    it); every accepted job completes once."""
    version, name = cluster_of(pg_url)
    began = started_at(pg_url)
    ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name]

    def restart() -> float:
        if not down:
            subprocess.run([*ctl, "restart", "-m", "fast"], check=True, timeout=120)
            return time.monotonic()  # the server is up again when pg_ctlcluster returns
        subprocess.run([*ctl, "stop", "-m", "fast"], check=True, timeout=120)
        try:
            time.sleep(down)
        finally:
            back = time.monotonic()
            subprocess.run([*ctl, "start"], check=True, timeout=120)
        return back

    report = run_through(tmp_path, pg_url, rabbit_vhost, restart)
    assert started_at(pg_url) > began  # the server really restarted
    with capsys.disabled():
        print(report.line(f"postgresql {'restart' if not down else f'down {down:.0f} s'}"))
    check(report)
    if down:  # 8 s without a database: a submission in that window was refused, not held
        assert report.refused > 0, report.statuses
