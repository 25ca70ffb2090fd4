"""Two `taskflow api` processes and a worker on PostgreSQL, RabbitMQ and Redis: one rate
limit across both, read-your-writes through the shared cache, a key revoked with
`taskflow keys` refused by both within 5 s, and one backlog limit for both."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.service import Service, http
from tests.rabbit import Vhost

pytestmark = pytest.mark.timeout(240)


def cluster(
    tmp_path: Path, env: dict[str, str], workers: int = 1
) -> tuple[list[Service], list[Service]]:
    apis = []
    for i in range(2):
        (tmp_path / f"api{i}").mkdir()
        apis.append(Service(home=tmp_path / f"api{i}", env=env, command=("api",)))
    others = []
    for i in range(workers):
        (tmp_path / f"w{i}").mkdir()
        others.append(Service(home=tmp_path / f"w{i}", env=env, command=("worker",)))
    return apis, others


def base_env(
    pg_url: str, vhost: Vhost, redis_url: str, prefix: str, **extra: str
) -> dict[str, str]:
    return {
        "TASKFLOW_DATABASE_URL": pg_url,
        "TASKFLOW_AMQP_URL": vhost.url,
        "TASKFLOW_REDIS_URL": redis_url,
        "TASKFLOW_AMQP_PREFIX": prefix,
        "TASKFLOW_DEMO": "1",
        **extra,
    }


def test_one_rate_limit_across_two_api_processes(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, redis_url: str, redis_prefix: str
) -> None:
    env = base_env(
        pg_url, rabbit_vhost, redis_url, redis_prefix, TASKFLOW_RATE_LIMIT_READ="10/minute"
    )
    apis, _ = cluster(tmp_path, env, workers=0)
    try:
        for api in apis:
            api.start()

        def one(i: int) -> int:
            return http("GET", f"{apis[i % 2].url}/api/v1/jobs?limit=1")[0]

        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(one, range(50)))
        assert statuses.count(200) == 10, statuses
        assert statuses.count(429) == 40
        status, body = http("GET", f"{apis[0].url}/api/v1/jobs")
        assert status == 429 and body["error"]["code"] == "rate_limited"
        assert http("GET", f"{apis[1].url}/api/v1/health")[0] == 200  # health: its own group
    finally:
        for api in apis:
            api.stop()


def test_read_your_writes_through_two_api_processes(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, redis_url: str, redis_prefix: str
) -> None:
    env = base_env(pg_url, rabbit_vhost, redis_url, redis_prefix)
    apis, workers = cluster(tmp_path, env)
    a, b = apis
    try:
        for api in apis:
            api.start()
        workers[0].start_worker()
        status, body = http(
            "POST", f"{a.url}/api/v1/jobs", {"task_type": "fail", "data": [{"payload": {}}]}
        )
        assert status == 202, body
        (job_id,) = body["taskIds"]
        status, job = http("GET", f"{b.url}/api/v1/jobs/{job_id}?wait=30")
        assert job["status"] == "failed", job
        time.sleep(5.5)  # a terminal job's view is cached once its last log lines are in
        views = [http("GET", f"{b.url}/api/v1/jobs/{job_id}")[1] for _ in range(2)]
        assert views[0] == views[1]
        metrics = http("GET", f"{b.url}/api/v1/metrics")[1]
        assert metrics["cache"]["backend"] == "redis" and metrics["cache"]["hits"] >= 1
        # replay through A; B's very next read shows it (the cached view was dropped)
        status, replayed = http(
            "POST", f"{a.url}/api/v1/jobs/action/{job_id}/retry", {"reason": "ryw"}
        )
        assert status == 200, replayed
        status, after = http("GET", f"{b.url}/api/v1/jobs/{job_id}")
        assert status == 200
        assert [r["reason"] for r in after["replays"]] == ["ryw"], after
        # purge through A; B answers 404 at once
        http("GET", f"{a.url}/api/v1/jobs/{job_id}?wait=30")
        time.sleep(5.5)
        http("GET", f"{b.url}/api/v1/jobs/{job_id}")  # cached again
        assert http("DELETE", f"{a.url}/api/v1/dlq?q={job_id}")[1]["purged"] == 1
        assert http("GET", f"{b.url}/api/v1/jobs/{job_id}")[0] == 404
    finally:
        for svc in [*workers, *apis]:
            svc.stop()


def taskflow_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskflow", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_key_revoked_with_the_cli_is_refused_by_both_within_5_s(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, redis_url: str, redis_prefix: str
) -> None:
    env = base_env(pg_url, rabbit_vhost, redis_url, redis_prefix, TASKFLOW_AUTH="required")
    created = taskflow_cli(env, "keys", "create", "ops", "--scopes", "read,submit")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tf_") and key not in created.stderr
    auth = {"Authorization": f"Bearer {key}"}
    apis, _ = cluster(tmp_path, env, workers=0)
    try:
        for api in apis:
            api.start()
        for api in apis:
            assert http("GET", f"{api.url}/api/v1/jobs", headers=auth)[0] == 200
            assert http("GET", f"{api.url}/api/v1/jobs")[0] == 401
            status, body = http("DELETE", f"{api.url}/api/v1/dlq?all=true", headers=auth)
            assert (status, body["error"]["code"]) == (403, "forbidden")
        listed = taskflow_cli(env, "keys", "list")
        assert "ops" in listed.stdout and key not in listed.stdout
        revoked = taskflow_cli(env, "keys", "revoke", "ops")
        assert revoked.returncode == 0, revoked.stderr
        at = time.monotonic()
        refused: set[int] = set()
        while len(refused) < 2 and time.monotonic() - at < 5.0:
            for i, api in enumerate(apis):
                if http("GET", f"{api.url}/api/v1/jobs", headers=auth)[0] == 401:
                    refused.add(i)
            time.sleep(0.1)
        assert refused == {0, 1}, f"still accepted after {time.monotonic() - at:.1f} s"
        for api in apis:
            assert key not in api.log.read_text()  # never logged
    finally:
        for api in apis:
            api.stop()


def test_one_backlog_limit_for_the_cluster(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, redis_url: str, redis_prefix: str
) -> None:
    env = base_env(pg_url, rabbit_vhost, redis_url, redis_prefix, TASKFLOW_MAX_BACKLOG="5")
    apis, _ = cluster(tmp_path, env, workers=0)  # no worker: every job stays pending
    try:
        for api in apis:
            api.start()
        statuses = []
        for i in range(8):
            status, body = http(
                "POST",
                f"{apis[i % 2].url}/api/v1/jobs",
                {"task_type": "echo", "data": [{"payload": {}}]},
            )
            statuses.append(status)
        assert statuses == [202] * 5 + [429] * 3, statuses
        status, body = http("GET", f"{apis[0].url}/api/v1/jobs?status=pending")
        assert status == 200 and len(body["tasks"]) == 5
    finally:
        for api in apis:
            api.stop()
