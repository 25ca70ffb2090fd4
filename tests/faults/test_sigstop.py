"""Scenario 4 of the fault suite: a worker frozen (SIGSTOP) past its lease, then resumed."""

from __future__ import annotations

import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_distributed import executions, submit_many
from tests.faults.harness import (
    base_env,
    completed_twice,
    completions,
    query,
    service,
    stop_all,
    wait_all_terminal,
)
from tests.rabbit import Vhost

pytestmark = pytest.mark.timeout(150)

JOBS = 8  # half `def`, half `async def`; all held by the worker that is frozen
CONCURRENCY = 8
LEASE = 3.0
JOB_MS = 8000


def started(pg_url: str, job_id: str) -> bool:
    (status,) = query(pg_url, "SELECT status FROM taskflow_jobs WHERE id = %s", (job_id,))[0]
    return bool(status == "in_progress")


def poll(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_worker_frozen_past_its_lease_cannot_complete_what_another_took_over(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """Worker A takes 8 jobs of 8 s and is frozen (SIGSTOP) 0.5 s in. Its leases (3 s) expire;
    worker B's reaper requeues the jobs (`worker_lost`, the attempt counted) and B runs them
    as attempt 2. While B is still running them, A is resumed (SIGCONT), its attempt-1 runs
    near their end. Then:

    - A's lease renewal finds every lease taken: each attempt is told to stop. The `async def`
      ones stop inside their sleep, so they never record an execution; the `def` ones cannot be
      interrupted and finish, but their outcomes are refused by the attempt fence.
    - Every job is completed exactly once (a trigger counts transitions into `completed`), by
      attempt 2, with B's result.
    """
    env = base_env(
        pg_url,
        rabbit_vhost,
        TASKFLOW_CONCURRENCY=str(CONCURRENCY),
        TASKFLOW_LEASE_SECONDS=str(LEASE),
    )
    api = service(tmp_path, "api", env, "api")
    a = service(tmp_path, "a", env, "worker")
    b = service(tmp_path, "b", env, "worker")
    host = socket.gethostname()
    try:
        api.start()
        a.start_worker()
        assert a.process is not None
        owner_a = f"{host}:{a.process.pid}"
        ids: list[str] = []
        for i in range(JOBS):
            ids += submit_many(api, "record" if i % 2 else "record_async", [{"ms": JOB_MS}])
            # One message per job (each started before the next is submitted), so A's 8
            # deliveries fill its prefetch (8) and the jobs B's reaper republishes can only go
            # to B. (The API's publisher packs jobs committed together into one message; with
            # spare prefetch a frozen A could be handed a republished job, which would come
            # back only when the broker gives up on A's connection: docs/reliability.md, 3.)
            last = ids[-1]
            poll("A to start the job", lambda: started(pg_url, last), 10)  # noqa: B023
        tasks = dict(query(pg_url, "SELECT id::text, task FROM taskflow_jobs"))

        def held_by(owner: str, attempt: int) -> bool:
            (n,) = query(
                pg_url,
                "SELECT count(*) FROM taskflow_jobs WHERE status = 'in_progress'"
                " AND lease_owner = %s AND attempts = %s",
                (owner, attempt),
            )[0]
            return bool(n == JOBS)

        poll("A to hold every job", lambda: held_by(owner_a, 1), 20)
        time.sleep(0.5)
        a.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        b.start_worker()
        assert b.process is not None
        owner_b = f"{host}:{b.process.pid}"
        poll("B to take over every job as attempt 2", lambda: held_by(owner_b, 2), 30)
        taken_over = time.monotonic() - frozen_at
        a.signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        poll(
            "A to see its leases lost",
            lambda: a.log.read_text().count("lease_lost") >= JOBS,
            10,
        )
        assert held_by(owner_b, 2), "A's resumed attempts disturbed B's"
        counts = wait_all_terminal(pg_url, JOBS, timeout=60)
        assert counts == {"completed": JOBS}
        # The cluster, A included, still takes work after the freeze.
        assert a.process.poll() is None
        submit_many(api, "record", [{"ms": 1}] * 4)
        wait_all_terminal(pg_url, JOBS + 4, timeout=30)

        done = completions(pg_url)
        twice = completed_twice(pg_url)
        jobs = {
            str(r[0]): (int(r[1]), r[2])
            for r in query(
                pg_url,
                "SELECT id::text, attempts, result FROM taskflow_jobs WHERE id = ANY(%s)",
                (ids,),
            )
        }
        rows = [r for r in executions(pg_url) if r[0] in set(ids)]
        by_a = [(j, att) for j, att, w, _ in rows if w == a.process.pid]
        async_by_a = [j for j, _ in by_a if tasks[j] == "record_async"]
        sync_by_a = [j for j, _ in by_a if tasks[j] == "record"]
        # A's attempts were stopped by the lost lease and became `lease_lost` failures (or, had
        # one finished first, a success): the fenced store refused each, and it was dropped.
        a_log = a.log.read_text()
        refused = a_log.count("stale_failure_dropped") + a_log.count("stale_outcome_dropped")
        with capsys.disabled():
            print(
                f"\nsigstop: jobs={JOBS} faults=1 frozen_s={resumed_at - frozen_at:.1f} "
                f"taken_over_after_s={taken_over:.1f} completions={len([d for d in done if d[0] in jobs])} "
                f"completed_twice={len(twice)} lost=0 a_executions_sync={len(sync_by_a)} "
                f"a_executions_async={len(async_by_a)} a_outcomes_refused={refused}"
            )
        assert not twice, twice
        assert Counter(j for j, _, _ in done if j in jobs) == Counter(ids)  # one completion each
        assert all(attempts == 2 for attempts, _ in jobs.values()), jobs
        assert all(result == {"worker": b.process.pid} for _, result in jobs.values()), jobs
        assert all(att == 1 for _, att in by_a)  # A only ever ran the attempt it lost
        assert not async_by_a, async_by_a  # told to stop: the async attempts never recorded
        assert refused == JOBS, refused  # every stale outcome was refused by the fence
    finally:
        for s in (a, b):
            if s.process is not None and s.process.poll() is None:
                s.signal(signal.SIGCONT)
        stop_all([api, a, b])
