"""Scenario 5 of the fault suite: SIGTERM to every worker mid-run, then a restart."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_distributed import executions, submit_many
from tests.faults.harness import (
    base_env,
    completed_twice,
    query,
    service,
    stop_all,
    wait_all_terminal,
)
from tests.rabbit import Vhost

pytestmark = pytest.mark.timeout(180)

JOBS = 24
WORKERS = 2
CONCURRENCY = 4
JOB_MS = 2000
GRACE = 1.0


def test_sigterm_to_every_worker_mid_run_burns_no_attempt(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """Jobs of 2 s, half `async def` (`record_async`) and half plain `def` (`record`), a
    shutdown grace of 1 s: SIGTERM to every worker while a wave of jobs is half done.

    - Each worker exits 0.
    - The async jobs still running when the grace ends are cut and released: back to
      ``pending`` with their attempt given back.
    - The sync jobs cannot be cut (a thread cannot be cancelled): the worker waits for them
      and stores their outcome, instead of giving back a job whose thread still runs it.
    - After a restart every job completes with ``attempts == 1``, none carries
      ``worker_lost``, and every job recorded exactly one execution: the shutdown burned no
      attempt and ran nothing twice."""
    env = base_env(
        pg_url,
        rabbit_vhost,
        TASKFLOW_CONCURRENCY=str(CONCURRENCY),
        TASKFLOW_SHUTDOWN_GRACE_SECONDS=str(GRACE),
    )
    api = service(tmp_path, "api", env, "api")
    workers = [service(tmp_path, f"w{i}", env, "worker") for i in range(WORKERS)]
    try:
        api.start()
        for worker in workers:
            worker.start_worker()
        ids: list[str] = []
        for i in range(JOBS):  # interleaved, so every wave holds both kinds
            ids += submit_many(api, "record" if i % 2 else "record_async", [{"ms": JOB_MS}])
        # Wait for the second wave to be well under way (the first took 2 s), then stop it.
        deadline = time.monotonic() + 30
        while len(executions(pg_url)) < WORKERS * CONCURRENCY:
            assert time.monotonic() < deadline, "the first wave did not finish"
            time.sleep(0.1)
        time.sleep(0.5)
        running = {
            str(r[0]): str(r[1])
            for r in query(
                pg_url, "SELECT id::text, task FROM taskflow_jobs WHERE status = 'in_progress'"
            )
        }
        stopping = time.monotonic()
        for worker in workers:
            worker.signal(signal.SIGTERM)
        codes = [worker.wait(30) for worker in workers]
        shutdown = time.monotonic() - stopping
        assert codes == [0] * WORKERS, [w.tail() for w in workers]
        after = {
            str(r[0]): (str(r[1]), int(r[2]))
            for r in query(pg_url, "SELECT id::text, status, attempts FROM taskflow_jobs")
        }
        cut = sorted(i for i in running if after[i][0] == "pending")
        waited = sorted(i for i, task in running.items() if task == "record")
        assert cut, f"no job was cut by the 1 s grace: {running}, {after}"
        assert waited, f"no sync job was running at the signal: {running}"
        assert all(running[i] == "record_async" for i in cut)  # only async jobs are cut
        assert all(after[i][1] == 0 for i in cut)  # released: the attempt given back
        assert all(after[i] == ("completed", 1) for i in waited)  # waited for, stored
        assert not [i for i, (status, _) in after.items() if status == "in_progress"]

        for worker in workers:
            worker.start_worker()
        counts = wait_all_terminal(pg_url, JOBS, timeout=60)
        assert counts == {"completed": JOBS}
        jobs = query(pg_url, "SELECT id::text, attempts, error->>'code' FROM taskflow_jobs")
        assert {str(r[0]) for r in jobs} == set(ids)
        burned = [r for r in jobs if int(r[1]) != 1]
        worker_lost = [r for r in jobs if r[2] == "worker_lost"]
        rows = executions(pg_url)
        per_job = Counter(job_id for job_id, _, _, _ in rows)
        twice = sorted(j for j, n in per_job.items() if n > 1)
        with capsys.disabled():
            print(
                f"\nsigterm: jobs={JOBS} faults={WORKERS} running_at_signal={len(running)} "
                f"cut_async={len(cut)} waited_sync={len(waited)} burned={len(burned)} "
                f"worker_lost={len(worker_lost)} lost=0 executions={len(rows)} "
                f"ran_twice={len(twice)} shutdown_s={shutdown:.1f}"
            )
        assert not burned, burned
        assert not worker_lost, worker_lost
        assert not twice, twice
        assert set(per_job) == set(ids)  # every job recorded its one execution
    finally:
        stop_all([api, *workers])


def test_a_second_signal_forces_a_fast_exit_without_loss(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """A grace of 30 s, jobs of 20 s, and SIGTERM twice: the worker leaves at once. Its async
    jobs are cut and given back (attempt returned); its sync jobs, whose threads cannot be
    stopped, are left claimed and come back when their lease expires (`worker_lost`, the
    attempt counted: their thread may have done part of the work). After a restart every job
    completes, once."""
    env = base_env(
        pg_url,
        rabbit_vhost,
        TASKFLOW_CONCURRENCY="4",
        TASKFLOW_SHUTDOWN_GRACE_SECONDS="30",
    )
    api = service(tmp_path, "api", env, "api")
    worker = service(tmp_path, "w", env, "worker")
    try:
        api.start()
        worker.start_worker()
        ids: list[str] = []
        for i in range(4):
            ids += submit_many(api, "record" if i % 2 else "record_async", [{"ms": 20_000}])
        deadline = time.monotonic() + 30
        while len(query(pg_url, "SELECT 1 FROM taskflow_jobs WHERE status = 'in_progress'")) < 4:
            assert time.monotonic() < deadline, "the jobs did not start"
            time.sleep(0.1)
        stopping = time.monotonic()
        worker.signal(signal.SIGTERM)
        time.sleep(0.5)
        worker.signal(signal.SIGTERM)
        code = worker.wait(30)
        exited = time.monotonic() - stopping
        assert code == 0, worker.tail()
        assert exited < 5, exited  # not the 30 s grace, not the 20 s jobs
        after = {
            str(r[0]): (str(r[1]), str(r[2]), int(r[3]))
            for r in query(pg_url, "SELECT id::text, task, status, attempts FROM taskflow_jobs")
        }
        assert sorted(v for v in after.values()) == sorted(
            [("record", "in_progress", 1)] * 2 + [("record_async", "pending", 0)] * 2
        ), after

        worker.start_worker()
        counts = wait_all_terminal(pg_url, 4, timeout=90)
        assert counts == {"completed": 4}
        final = {
            str(r[0]): (str(r[1]), int(r[2]))
            for r in query(pg_url, "SELECT id::text, task, attempts FROM taskflow_jobs")
        }
        twice = completed_twice(pg_url)
        with capsys.disabled():
            print(
                f"\nsecond signal: jobs=4 faults=2 exit_s={exited:.1f} lost=0 "
                f"completed_twice={len(twice)} attempts={sorted(final.values())}"
            )
        assert not twice
        assert sorted(final.values()) == sorted([("record", 2)] * 2 + [("record_async", 1)] * 2), (
            final
        )
    finally:
        stop_all([api, worker])
