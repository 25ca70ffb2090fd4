"""S3 goes down mid-run: no job fails, stalls or burns an attempt because of logs; the API
answers without a 5xx and says it could not read S3; the workers spool the lines and upload
them, in order and once, when S3 returns. (The S3 server is this test's own moto server, so
this scenario stops nothing of the machine's.)"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.e2e.service import http
from tests.faults.harness import base_env, service, stop_all, wait_all_terminal
from tests.rabbit import Vhost
from tests.s3 import S3Server

pytestmark = pytest.mark.timeout(240)


def log_of(api_url: str, job_id: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"{api_url}/api/v1/logs/{job_id}?format=jsonl", timeout=30) as r:
        return r.status, r.headers["X-Log-Complete"], r.read().decode()


def test_an_s3_outage_loses_no_line_and_fails_no_job(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost
) -> None:
    s3 = S3Server()
    s3.start()
    url = f"{s3.base}/tf-outage-{uuid.uuid4().hex[:8]}"
    env = base_env(pg_url, rabbit_vhost, TASKFLOW_S3_URL=url)
    api, worker = service(tmp_path, "api", env, "api"), service(tmp_path, "w0", env, "worker")
    try:
        api.start()
        worker.start_worker()
        ids: list[str] = []
        for _ in range(3):
            status, body = api.submit("chatty", [{"ticks": 8, "every": 0.25} for _ in range(10)])
            assert status == 202, body
            ids += body["taskIds"]
        time.sleep(1.0)
        s3.stop()  # mid-run: the jobs are logging
        counts = wait_all_terminal(pg_url, len(ids), timeout=90)
        assert counts.get("completed") == len(ids), counts  # none failed because of logs
        status, jobs = http("GET", f"{api.url}/api/v1/jobs?limit=100")
        assert status == 200 and all(j["attempts"] == 1 for j in jobs["tasks"])
        code, complete, _ = log_of(api.url, ids[0])  # S3 down: an answer, not a 5xx
        assert (code, complete) == (200, "false")
        status, health = http("GET", f"{api.url}/api/v1/health")
        assert status == 200, health

        s3.start()  # back: the spool is uploaded (every 5 s)
        deadline = time.monotonic() + 60
        missing = ids
        while missing and time.monotonic() < deadline:
            time.sleep(1.0)
            missing = [j for j in ids if "attempt 1 completed in" not in log_of(api.url, j)[2]]
        assert not missing, f"{len(missing)} logs incomplete after S3 returned"
        for job_id in ids:
            records = [json.loads(line) for line in log_of(api.url, job_id)[2].splitlines()]
            messages = [r["message"] for r in records]
            assert messages.count("attempt 1 started") == 1  # uploaded once
            assert [r["fields"]["i"] for r in records if r["message"] == "tick"] == list(range(8))
            assert messages[-1].startswith("attempt 1 completed in")
        assert "log_spool_uploaded" in worker.log.read_text()
    finally:
        stop_all([api, worker])
        s3.stop()
