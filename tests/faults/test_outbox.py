"""Outbox: the API dies between committing a submission and publishing it; the job runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.test_distributed import executions
from tests.faults.harness import base_env, query, service, stop_all, wait_all_terminal
from tests.rabbit import Vhost

pytestmark = pytest.mark.timeout(120)


def test_api_killed_between_commit_and_publish_loses_no_job(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """The committed-but-unpublished row is found by the reaper's outbox sweep (in a worker)
    and published again: the job completes, and runs exactly once."""
    env = base_env(pg_url, rabbit_vhost)
    crashing = service(
        tmp_path, "api-crash", {**env, "TASKFLOW_TEST_CRASH_AFTER_COMMIT": "1"}, "api"
    )
    api = service(tmp_path, "api", env, "api")
    worker = service(tmp_path, "w0", env, "worker")
    try:
        crashing.start()
        worker.start_worker()
        with pytest.raises(ConnectionError):  # reset or closed: the API died mid-request
            crashing.submit("record", [{"ms": 1}])
        assert crashing.wait(10) == 97
        ((job_id, status, published),) = query(
            pg_url, "SELECT id::text, status, published FROM taskflow_jobs"
        )
        assert (status, published) == ("pending", False)  # committed, never published
        crashed_at = time.monotonic()
        api.start()
        counts = wait_all_terminal(pg_url, 1, timeout=15)
        recovered = time.monotonic() - crashed_at
        assert counts == {"completed": 1}
        runs = [row for row in executions(pg_url) if row[0] == job_id]
        assert len(runs) == 1, runs  # republished once, run once
        assert api.job(job_id)["status"] == "completed"
        assert "outbox_republished" in worker.log.read_text()  # the sweep, not the new API
        with capsys.disabled():
            print(f"\noutbox: jobs=1 faults=1 lost=0 duplicated=0 recovery_s={recovered:.1f}")
    finally:
        stop_all([crashing, api, worker])
