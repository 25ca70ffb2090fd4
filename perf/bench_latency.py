"""Where W3's submit -> completion goes: N sequential no-op jobs through `taskflow.connect()`
and one `taskflow worker`, each job's time split by the times the store recorded.

    python perf/bench_latency.py --jobs 200

Stages (per job; p50, p95, p99 in ms):
  submit     the caller's `submit`: the group commit of the job (returns at the commit)
  queued     created_at -> started_at: the confirmed publish, the delivery, the claim's commit
  ran        started_at -> finished_at: the no-op, the outcome batch, the fenced settle
  woken      finished_at -> `wait` returned: the commit, the ack, the event and its delivery
  total      submit called -> `wait` returned (what the suite's W3 reports)
The stages are read on one machine's clock (the API's, the worker's and PostgreSQL's are the
same clock here), so they add up to the total within the scheduling noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from suite import percentile, processes, scratch  # noqa: E402

STAGES = ("submit", "queued", "ran", "woken", "total")


async def measure(db: str, amqp: str, n: int) -> dict[str, list[float]]:
    from bench_tasks import registry

    import taskflow

    out: dict[str, list[float]] = {stage: [] for stage in STAGES}
    async with taskflow.connect(database_url=db, amqp_url=amqp, registry=registry) as tf:
        for i in range(n + 1):
            began = time.time()
            job_id = await tf.submit("noop")
            submitted = time.time()
            job = await tf.wait(job_id, timeout=30)
            woken = time.time()
            if job.status.value != "completed" or job.started_at is None or not job.finished_at:
                raise SystemExit(f"job {job_id} ended {job.status}: {job}")
            if not i:
                continue  # the first one warms the pool and the channels
            out["submit"].append(submitted - began)
            out["queued"].append(job.started_at - job.created_at)
            out["ran"].append(job.finished_at - job.started_at)
            out["woken"].append(woken - job.finished_at)
            out["total"].append(woken - began)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    with scratch(True) as s:
        assert s.db
        log = s.home / "worker.log"
        with processes([[sys.executable, "-m", "taskflow", "worker"]], s.env, log):
            time.sleep(1.0)  # the worker consumes (its start-up is not a stage)
            samples = anyio.run(measure, s.db, s.amqp, args.jobs, backend="asyncio")
    print(f"{args.jobs} sequential no-op jobs, one worker; ms")
    print(f"{'stage':<8}{'p50':>8}{'p95':>8}{'p99':>8}")
    for stage in STAGES:
        values = samples[stage]
        row = "".join(f"{percentile(values, q) * 1000:8.2f}" for q in (50, 95, 99))
        print(f"{stage:<8}{row}")


if __name__ == "__main__":
    main()
