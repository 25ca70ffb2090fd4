"""Per-job logs in distributed mode on S3 (moto, real protocol): a worker ships a running
job's lines while it runs, the API follows them live (SSE) and serves the log, a presigned
link reads it, and purging the job deletes the object."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from taskflow.s3 import open_s3_logs
from tests.e2e.service import Service, http
from tests.faults.harness import base_env, service, stop_all
from tests.rabbit import Vhost

pytestmark = pytest.mark.timeout(180)


def read_s3(url: str, job_id: str) -> bytes | None:
    async def read() -> bytes | None:
        async with open_s3_logs(url) as store:
            return await store.read(job_id)

    return anyio.run(read)


@contextmanager
def s3_cluster(tmp_path: Path, pg_url: str, vhost: Vhost, s3_url: str) -> Iterator[Service]:
    """An API and one worker with their logs in S3; yields the API."""
    env = base_env(pg_url, vhost, TASKFLOW_S3_URL=s3_url)
    api, worker = service(tmp_path, "api", env, "api"), service(tmp_path, "w0", env, "worker")
    try:
        api.start()
        worker.start_worker()
        yield api
    finally:
        stop_all([api, worker])


def test_a_worker_ships_lines_live_to_s3_and_the_api_follows_them(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, s3_url: str
) -> None:
    with s3_cluster(tmp_path, pg_url, rabbit_vhost, s3_url) as api:
        status, body = api.submit("chatty", [{"ticks": 20, "every": 0.25}])  # about 5 s
        assert status == 202, body
        (job_id,) = body["taskIds"]
        seen: list[tuple[float, str]] = []

        def follow() -> None:
            url = f"{api.url}/api/v1/logs/{job_id}?follow=true"
            with urllib.request.urlopen(url, timeout=60) as response:
                assert response.headers["Content-Type"].startswith("text/event-stream")
                for raw in response:
                    seen.append((time.monotonic(), raw.decode().rstrip("\n")))

        reader = threading.Thread(target=follow)
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive()
        events = [line for _, line in seen if line.startswith("event:")]
        assert events[-1] == "event: end"
        ticks = [(t, line) for t, line in seen if "] tick" in line]
        assert len(ticks) == 20
        end_at = next(t for t, line in seen if line == "event: end")
        # lines arrived while the job ran (shipped every 2 s), not all at its end
        assert end_at - ticks[0][0] > 2.0, (ticks[0], end_at)

        status, job = http("GET", f"{api.url}/api/v1/jobs/{job_id}")
        assert job["status"] == "completed" and job["hasLogs"] is True
        with urllib.request.urlopen(job["logUrl"], timeout=10) as response:  # presigned
            direct = response.read()
        with urllib.request.urlopen(f"{api.url}/api/v1/logs/{job_id}", timeout=10) as response:
            assert response.headers["X-Log-Source"].startswith("s3://")
            text = response.read().decode()
        assert text.count("] tick") == 20 and "attempt 1 completed in" in text
        assert direct == read_s3(s3_url, job_id)
        records = [json.loads(line) for line in direct.splitlines()]
        assert [r["fields"]["i"] for r in records if r["message"] == "tick"] == list(range(20))
        assert records[0]["message"] == "attempt 1 started"


def test_purging_a_dead_letter_deletes_its_log_in_s3(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, s3_url: str
) -> None:
    with s3_cluster(tmp_path, pg_url, rabbit_vhost, s3_url) as api:
        status, body = api.submit("poison_error", [{}])
        (job_id,) = body["taskIds"]
        deadline = time.monotonic() + 60
        while b"dead-lettered" not in (read_s3(s3_url, job_id) or b""):
            assert time.monotonic() < deadline, "the dead letter's log never reached S3"
            time.sleep(0.5)
        status, body = http("DELETE", f"{api.url}/api/v1/dlq?task_type=poison_error")
        assert (status, body["purged"]) == (200, 1)
        assert read_s3(s3_url, job_id) is None
        with pytest.raises(urllib.error.HTTPError) as gone:
            urllib.request.urlopen(f"{api.url}/api/v1/logs/{job_id}", timeout=10)
        assert gone.value.code == 404
        gone.value.close()
