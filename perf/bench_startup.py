"""Worker start-up: spawn -> ready (consuming), `taskflow worker` against Dramatiq's worker,
interleaved in the same run, on this machine's PostgreSQL and RabbitMQ.

    python perf/bench_startup.py --repeat 5

TaskFlow is ready when it logs `taskflow_started` (after the schema check, the pool, the
broker connections and every child); Dramatiq when it logs "is ready for action". The
database and the vhost are scratch ones, migrated once before the timed runs, dropped after. Dramatiq (the `bench` extra)
is skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PG = os.environ.get("TASKFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("TASKFLOW_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DRAMATIQ_MODULE = """
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
dramatiq.set_broker(RabbitmqBroker(url={url!r}))

@dramatiq.actor(queue_name={queue!r})
def noop():
    pass
"""


def ready_after(command: list[str], env: dict[str, str], marker: str, cwd: Path) -> float:
    """Seconds from spawn to the first output line holding ``marker``; then stop it."""
    start = time.monotonic()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if marker in line:
                return time.monotonic() - start
        raise RuntimeError(f"{command[2:]} exited before {marker!r}")
    finally:
        process.terminate()
        process.wait(timeout=30)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    name = f"tf_bench_start_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG.rsplit("/", 1)[0] + f"/{name}"
    queue = "bench_start"
    vhost = f"taskflow-bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    amqp = f"{AMQP.rstrip('/')}/{vhost}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "dq_noop.py").write_text(DRAMATIQ_MODULE.format(url=amqp, queue=queue))
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("TASKFLOW_")},
                "PYTHONPATH": str(ROOT),
                "TASKFLOW_DATABASE_URL": url,
                "TASKFLOW_AMQP_URL": amqp,
                "TASKFLOW_HOME": str(work / "home"),
                "TASKFLOW_DEMO": "1",
            }
            taskflow = [PY, "-m", "taskflow", "worker"]
            ready_after(taskflow, env, "taskflow_started", work)  # migrates the scratch db
            systems = {"TaskFlow worker": (taskflow, "taskflow_started")}
            if importlib.util.find_spec("dramatiq") is not None:
                dramatiq = [PY, "-m", "dramatiq", "dq_noop", "--processes", "1"]
                systems["Dramatiq worker (1 process)"] = (dramatiq, "is ready for action")
            times: dict[str, list[float]] = {s: [] for s in systems}
            for _ in range(args.repeat):  # interleaved
                for system, (command, marker) in systems.items():
                    env_run = {**env, "PYTHONPATH": f"{work}:{ROOT}"}
                    times[system].append(ready_after(command, env_run, marker, work))
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        rabbitmqctl("delete_vhost", vhost)  # with every queue and exchange of the run
    print(f"worker start-up, spawn -> ready, {args.repeat} runs interleaved, this machine")
    print(f"{'what':<32} {'median s':>9} {'min':>7} {'max':>7}")
    for system, samples in times.items():
        print(
            f"{system:<32} {statistics.median(samples):>9.3f} "
            f"{min(samples):>7.3f} {max(samples):>7.3f}"
        )
    if len(times) == 2:
        tf, dq = (statistics.median(t) for t in times.values())
        print(f"TaskFlow / Dramatiq start-up time: {tf / dq:.2f}x")


if __name__ == "__main__":
    main()
