"""Scenario 7 of the fault suite: values PostgreSQL refuses, mixed into a stream of valid jobs.

Real `taskflow api` and `taskflow worker` processes. Per round, concurrently: ten valid jobs
(each its own request), one submission whose payload holds a NUL or a lone surrogate, one job
whose result holds one, one whose error message holds one. Every valid job completes at
attempt 1; every bad submission is a 422 naming its field; every bad result is a terminal
`result_not_storable` at attempt 1; every bad error message is stored cleaned and retried as
usual; no job is lost to a stalled worker (`worker_lost`).
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.service import Service, http
from tests.faults.harness import base_env, query, service, stop_all
from tests.rabbit import Vhost

pytestmark = pytest.mark.timeout(240)

ROUNDS = 20
VALID_PER_ROUND = 10
BAD_PAYLOADS = [{"s": "a\x00b"}, {"k\x00": 1}, {"s": "lone \ud800"}, {"deep": [{"x": "\x00"}]}]


def post(api: Service, task: str, payload: dict[str, Any]) -> tuple[int, Any]:
    return http(
        "POST", f"{api.url}/api/v1/jobs", {"task_type": task, "data": [{"payload": payload}]}
    )


def test_values_postgresql_refuses_never_hurt_the_valid_jobs_around_them(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    env = base_env(pg_url, rabbit_vhost)
    api = service(tmp_path, "api", env, "api")
    worker = service(tmp_path, "worker", env, "worker")
    try:
        api.start()
        worker.start_worker()
        calls: list[tuple[str, str, dict[str, Any]]] = []
        for r in range(ROUNDS):
            calls += [("valid", "record", {"ms": 5}) for _ in range(VALID_PER_ROUND)]
            calls.append(("bad_payload", "record", BAD_PAYLOADS[r % len(BAD_PAYLOADS)]))
            kind = "surrogate" if r % 2 else "nul"
            calls.append(("bad_result", "poison_result", {"kind": kind}))
            calls.append(("bad_error", "poison_error", {}))
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=13) as pool:
            answers = list(pool.map(lambda c: (c[0], *post(api, c[1], c[2])), calls))
        ids: dict[str, list[str]] = {}
        statuses: Counter[tuple[str, int]] = Counter()
        for kind, status, body in answers:
            statuses[(kind, status)] += 1
            if status == 202:
                ids.setdefault(kind, []).extend(body["taskIds"])
            elif kind == "bad_payload":
                assert status == 422, body
                fields = [f["field"] for f in body["error"]["details"]["fields"]]
                assert fields and all(f.startswith("data[0].payload") for f in fields), body
        accepted = [i for group in ids.values() for i in group]
        jobs = api.wait_terminal(accepted, timeout=120)
        drained = time.monotonic() - started
        valid = [jobs[i] for i in ids.get("valid", [])]
        bad_results = [jobs[i] for i in ids.get("bad_result", [])]
        bad_errors = [jobs[i] for i in ids.get("bad_error", [])]
        lost = query(
            pg_url, "SELECT count(*) FROM taskflow_jobs WHERE error->>'code' = 'worker_lost'"
        )[0][0]
        executions = query(pg_url, "SELECT count(*), count(DISTINCT job_id) FROM executions")[0]
        _, health = http("GET", f"{api.url}/api/v1/health")
        with capsys.disabled():
            print(
                f"\npoison: valid={len(valid)} completed_at_attempt_1="
                f"{sum(1 for j in valid if (j['status'], j['attempts']) == ('completed', 1))} "
                f"bad_payloads={statuses[('bad_payload', 422)]}x422 "
                f"bad_results={len(bad_results)} result_not_storable="
                f"{sum(1 for j in bad_results if j['error']['code'] == 'result_not_storable')} "
                f"bad_errors={len(bad_errors)} dead_lettered_after_2="
                f"{sum(1 for j in bad_errors if (j['status'], j['attempts']) == ('failed', 2))} "
                f"worker_lost={lost} executions={executions[0]} drain_s={drained:.1f}"
            )
        assert statuses[("valid", 202)] == ROUNDS * VALID_PER_ROUND, statuses
        assert statuses[("bad_payload", 422)] == ROUNDS, statuses
        assert statuses[("bad_result", 202)] == ROUNDS and statuses[("bad_error", 202)] == ROUNDS
        assert {(j["status"], j["attempts"]) for j in valid} == {("completed", 1)}
        assert executions == (len(valid), len(valid))  # each valid job ran exactly once
        for job in bad_results:
            assert (job["status"], job["attempts"], job["inDlq"]) == ("failed", 1, True), job
            assert job["error"]["code"] == "result_not_storable", job
        for job in bad_errors:
            assert (job["status"], job["attempts"]) == ("failed", 2), job
            assert job["error"]["code"] == "task_error", job
            assert job["error"]["message"] == "broken \ufffd message \ufffd", job
        assert lost == 0
        assert health["status"] == "ok", health
        assert worker.process is not None and worker.process.poll() is None
    finally:
        stop_all([api, worker])
