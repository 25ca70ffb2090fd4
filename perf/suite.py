"""The benchmark suite: TaskFlow against Celery and Dramatiq on this machine's RabbitMQ and
PostgreSQL, every workload in the same run, repetitions interleaved.

    invoke bench                       # = python perf/suite.py --repeat 3 --jobs 10000
    python perf/suite.py --repeat 1 --jobs 2000 --only taskflow,dramatiq --out /tmp/s.json

Systems: TaskFlow (`taskflow worker`, its defaults), Celery (RabbitMQ broker, no result
backend; default prefork pool, and tuned: threads pool with 32 threads) and Dramatiq
(RabbitMQ broker; default 8 threads, and tuned: 32 threads). Workloads (see perf/README.md):
W1 enqueue, W2 drain (one worker), W3 submit -> completion latency, W4 50 ms sleeps, W5
drain with 1-3 workers, worker start-up (spawn -> first completion) and the worker's peak
RSS. Each measurement gets a scratch vhost (and for TaskFlow a scratch database), dropped
after; every wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import psutil
import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable
PG = os.environ.get("TASKFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("TASKFLOW_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS = os.environ.get("TASKFLOW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TASKFLOW_ENV: dict[str, str] = {}
"""Extra settings for TaskFlow's processes (``--taskflow-env``); its defaults otherwise."""
SYSTEMS = (
    "taskflow",
    "taskflow-nologs",
    "celery",
    "celery-threads",
    "dramatiq",
    "dramatiq-threads",
)
"""``taskflow-nologs``: TaskFlow with job log capture off (``TASKFLOW_MAX_LOG_BYTES=0``), so
the ratio in its column is the cost of the per-job logs."""
WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "startup")


class Failed(Exception):
    """A measurement that did not finish (timeout, a process that died, jobs missing)."""


# ------------------------------------------------------------------ scratch resources


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


@dataclass
class Scratch:
    """A vhost, a Redis key prefix and (for TaskFlow) a database of one measurement."""

    amqp: str
    prefix: str
    db: str | None
    home: Path
    env: dict[str, str] = field(default_factory=dict)


@contextmanager
def scratch(database: bool) -> Iterator[Scratch]:
    token = uuid.uuid4().hex[:10]
    vhost, name = f"bench-{token}", f"bench_{token}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, urlsplit(AMQP).username or "guest", *[".*"] * 3)
    if database:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    home = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    amqp = with_path(AMQP, f"/{vhost}")
    db = with_path(PG, f"/{name}") if database else None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKFLOW_", "BENCH_"))}
    env |= {
        "PYTHONPATH": f"{HERE}:{ROOT}",
        "BENCH_AMQP_URL": amqp,
        "BENCH_REDIS_URL": REDIS,
        "BENCH_PREFIX": f"bench-{token}",
        "TASKFLOW_AMQP_URL": amqp,
        "TASKFLOW_HOME": str(home),
        "TASKFLOW_TASKS": "bench_tasks",
    }
    if db:
        env["TASKFLOW_DATABASE_URL"] = db
    env |= TASKFLOW_ENV
    try:
        yield Scratch(amqp=amqp, prefix=f"bench-{token}", db=db, home=home, env=env)
    finally:
        if database:
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        rabbitmqctl("delete_vhost", vhost)
        redis_client().delete(*redis_client().keys(f"bench-{token}:*") or [f"bench-{token}:x"])


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS)


# ------------------------------------------------------------------ worker processes


@contextmanager
def processes(
    commands: list[list[str]], env: dict[str, str], log: Path
) -> Iterator[list[psutil.Popen]]:
    procs: list[psutil.Popen] = []
    with log.open("ab") as out:
        try:
            for command in commands:
                procs.append(
                    psutil.Popen(command, env=env, cwd=HERE, stdout=out, stderr=subprocess.STDOUT)
                )
            yield procs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except psutil.TimeoutExpired:
                    for child in proc.children(recursive=True):
                        child.kill()
                    proc.kill()
                    proc.wait(10)


def tree_rss(procs: list[psutil.Popen]) -> int:
    total = 0
    for proc in procs:
        try:
            for p in (proc, *proc.children(recursive=True)):
                total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def poll_until(
    done: Callable[[], bool], procs: list[psutil.Popen], timeout: float, what: str, log: Path
) -> int:
    """Wait for ``done()``; return the peak RSS (bytes) of the processes meanwhile."""
    deadline, peak = time.monotonic() + timeout, 0
    while not done():
        peak = max(peak, tree_rss(procs))
        if time.monotonic() > deadline:
            raise Failed(f"{what}: timed out after {timeout:.0f} s (log {log})")
        for proc in procs:
            if proc.poll() is not None:
                raise Failed(f"{what}: a worker exited with {proc.returncode} (log {log})")
        time.sleep(0.05)
    return max(peak, tree_rss(procs))


# ------------------------------------------------------------------ systems


@dataclass
class System(ABC):
    """One system under test: how to start its workers, enqueue, and see completions."""

    name: str

    @abstractmethod
    def worker(self, s: Scratch, n: int) -> list[list[str]]:
        """The commands that start ``n`` worker processes."""

    @abstractmethod
    def enqueue(self, s: Scratch, task: str, n: int) -> float:
        """Enqueue ``n`` jobs one by one from this process; jobs/s."""

    @abstractmethod
    def completed(self, s: Scratch) -> int:
        """Jobs completed so far."""

    @abstractmethod
    def span(self, s: Scratch) -> float:
        """Seconds from the first completion to the last."""

    @abstractmethod
    def latency(self, s: Scratch, n: int) -> dict[str, list[float]]:
        """Submit -> completion samples (seconds), per way of submitting."""

    @property
    def database(self) -> bool:
        return False


class Peer(System):
    """Celery or Dramatiq: completions and latency probes go through Redis."""

    def completed(self, s: Scratch) -> int:
        return int(redis_client().get(f"{s.prefix}:count") or 0)

    def span(self, s: Scratch) -> float:
        r = redis_client()
        return float(r.get(f"{s.prefix}:last")) - float(r.get(f"{s.prefix}:first"))

    def _module(self, s: Scratch) -> Any:
        os.environ.update({k: v for k, v in s.env.items() if k.startswith("BENCH_")})
        sys.path.insert(0, str(HERE))
        import importlib

        importlib.reload(importlib.import_module("peer_done"))  # PREFIX from this scratch
        return importlib.reload(importlib.import_module(self.module))

    module = ""

    @abstractmethod
    def send(self, module: Any, task: str, *args: Any) -> None:
        """Enqueue one ``task`` job through ``module`` (the peer app)."""

    @abstractmethod
    def close(self, module: Any) -> None:
        """Close the peer app's broker connection."""

    def enqueue(self, s: Scratch, task: str, n: int) -> float:
        module = self._module(s)
        self.send(module, task)  # warm: the connection opens
        start = time.perf_counter()
        for _ in range(n - 1):
            self.send(module, task)
        rate = (n - 1) / (time.perf_counter() - start)
        self.close(module)
        return rate

    def latency(self, s: Scratch, n: int) -> dict[str, list[float]]:
        module, r = self._module(s), redis_client()
        samples = []
        for i in range(n + 1):
            tag = f"l{i}"
            start = time.perf_counter()
            self.send(module, "noop", tag)
            if r.blpop(f"{s.prefix}:{tag}", timeout=30) is None:
                raise Failed(f"{self.name} latency probe timed out")
            if i:  # the first one warms the connection
                samples.append(time.perf_counter() - start)
        self.close(module)
        return {"one by one": samples}


class Celery(Peer):
    module = "peer_celery"

    def worker(self, s: Scratch, n: int) -> list[list[str]]:
        pool = ["--pool", "threads", "--concurrency", "32"] if self.name.endswith("threads") else []
        return [
            [
                PY,
                "-m",
                "celery",
                "-A",
                "peer_celery",
                "worker",
                "--loglevel",
                "WARNING",
                "-n",
                f"w{i}@%h",
                "--without-gossip",
                "--without-mingle",
                *pool,
            ]
            for i in range(n)
        ]

    def send(self, module: Any, task: str, *args: Any) -> None:
        getattr(module, task).delay(*args)

    def close(self, module: Any) -> None:
        module.app.close()


class Dramatiq(Peer):
    module = "peer_dramatiq"

    def worker(self, s: Scratch, n: int) -> list[list[str]]:
        threads = ["--threads", "32"] if self.name.endswith("threads") else []
        return [[PY, "-m", "dramatiq", "peer_dramatiq", "--processes", str(n), *threads]]

    def send(self, module: Any, task: str, *args: Any) -> None:
        getattr(module, task).send(*args)

    def close(self, module: Any) -> None:
        module.dramatiq.get_broker().close()


class TaskFlow(System):
    @property
    def database(self) -> bool:
        return True

    @property
    def settings(self) -> list[str]:
        """Settings of this variant, as ``env`` arguments."""
        return ["TASKFLOW_MAX_LOG_BYTES=0"] if self.name == "taskflow-nologs" else []

    def worker(self, s: Scratch, n: int) -> list[list[str]]:
        return [["env", *self.settings, PY, "-m", "taskflow", "worker"] for _ in range(n)]

    def _sql(self, s: Scratch, query: str) -> Any:
        assert s.db
        with psycopg.connect(s.db) as conn:
            row = conn.execute(query).fetchone()  # type: ignore[arg-type]
            return row[0] if row else None

    def completed(self, s: Scratch) -> int:
        return int(self._sql(s, "SELECT count(*) FROM taskflow_jobs WHERE status = 'completed'"))

    def span(self, s: Scratch) -> float:
        return float(
            self._sql(
                s,
                "SELECT extract(epoch FROM max(finished_at) - min(finished_at))"
                " FROM taskflow_jobs WHERE status = 'completed'",
            )
        )

    def enqueue(self, s: Scratch, task: str, n: int) -> float:
        return anyio.run(self._enqueue_all, s, task, n, ("submit_many",), backend="asyncio")[
            "submit_many"
        ]

    def enqueue_rows(self, s: Scratch, n: int) -> dict[str, float]:
        return anyio.run(self._enqueue_all, s, "noop", n, W1_PYTHON, backend="asyncio")

    async def _enqueue_all(
        self, s: Scratch, task: str, n: int, rows: tuple[str, ...]
    ) -> dict[str, float]:
        from bench_tasks import registry

        import taskflow

        out: dict[str, float] = {}
        async with taskflow.connect(database_url=s.db, amqp_url=s.amqp, registry=registry) as tf:
            await tf.submit(task)  # warm: pool and channels open
            if "submit, one by one" in rows:
                start = time.perf_counter()
                for _ in range(n):
                    await tf.submit(task)
                out["submit, one by one"] = n / (time.perf_counter() - start)
            if "submit, 32 concurrent" in rows:

                async def submitter(count: int) -> None:
                    for _ in range(count):
                        await tf.submit(task)

                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(32):
                        tg.start_soon(submitter, n // 32)
                out["submit, 32 concurrent"] = n // 32 * 32 / (time.perf_counter() - start)
            if "submit_many" in rows:
                batch = [taskflow.NewJob(task=task) for _ in range(1000)]
                start, sent = time.perf_counter(), 0
                while sent < n:
                    sent += len(await tf.submit_many(batch[: n - sent]))
                out["submit_many"] = n / (time.perf_counter() - start)
        return out

    def latency(self, s: Scratch, n: int) -> dict[str, list[float]]:
        return anyio.run(self._latency, s, n, backend="asyncio")

    async def _latency(self, s: Scratch, n: int) -> dict[str, list[float]]:
        from bench_tasks import registry

        import taskflow

        python: list[float] = []
        async with taskflow.connect(database_url=s.db, amqp_url=s.amqp, registry=registry) as tf:
            for i in range(n + 1):
                start = time.perf_counter()
                await tf.wait(await tf.submit("noop"), timeout=30)
                if i:
                    python.append(time.perf_counter() - start)
        return {"Python producer": python}


W1_PYTHON = ("submit, one by one", "submit, 32 concurrent", "submit_many")


# ------------------------------------------------------------------ REST (TaskFlow's API)


class Http:
    """A minimal HTTP/1.1 keep-alive client (the bench must not be its own bottleneck)."""

    def __init__(self, port: int) -> None:
        self.port, self.buf = port, b""
        self.stream: Any = None

    async def __aenter__(self) -> Http:
        self.stream = await anyio.connect_tcp("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        await self.stream.send(head.encode() + data)
        while b"\r\n\r\n" not in self.buf:
            self.buf += await self.stream.receive()
        header, _, rest = self.buf.partition(b"\r\n\r\n")
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", header)
        if match is None:
            raise Failed(f"no content-length in {header[:200]!r}")
        length = int(match.group(1))
        while len(rest) < length:
            rest += await self.stream.receive()
        self.buf = rest[length:]
        return int(header.split(b" ", 2)[1]), json.loads(rest[:length])


@contextmanager
def taskflow_api(s: Scratch) -> Iterator[int]:
    port = 20000 + os.getpid() % 5000
    env = {**s.env, "TASKFLOW_PORT": str(port)}
    log = s.home / "api.log"
    with processes([[PY, "-m", "taskflow", "api"]], env, log) as procs:
        deadline = time.monotonic() + 60
        while b"taskflow_started" not in log.read_bytes():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise Failed(f"taskflow api did not start (log {log})")
            time.sleep(0.02)
        yield port


async def rest_enqueue(port: int, n: int) -> dict[str, float]:
    """Keep-alive clients, each sending its requests one after another."""

    async def client(count: int, size: int) -> None:
        data = [{"payload": {}}] * size
        async with Http(port) as http:
            for _ in range(count):
                status, body = await http.call(
                    "POST", "/api/v1/jobs", {"task_type": "noop", "data": data}
                )
                if status != 202:
                    raise Failed(f"REST submit answered {status}: {body}")

    async def rate(clients: int, size: int) -> float:
        count = n // (clients * size)
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(client, count, size)
        return clients * count * size / (time.perf_counter() - start)

    return {
        "REST, batches of 100": await rate(1, 100),
        "REST, batches of 100, 4 clients": await rate(4, 100),
        "REST, single, 32 clients": await rate(32, 1),
    }


async def rest_latency(port: int, n: int) -> list[float]:
    samples = []
    async with Http(port) as http:
        for i in range(n + 1):
            start = time.perf_counter()
            status, body = await http.call(
                "POST", "/api/v1/jobs", {"task_type": "noop", "data": [{"payload": {}}]}
            )
            if status != 202:
                raise Failed(f"REST submit answered {status}: {body}")
            status, job = await http.call("GET", f"/api/v1/jobs/{body['taskIds'][0]}?wait=30")
            if job.get("status") != "completed":
                raise Failed(f"REST latency probe: {job}")
            if i:
                samples.append(time.perf_counter() - start)
    return samples


# ------------------------------------------------------------------ workloads


Result = dict[str, float]


def w1(system: System, jobs: int, timeout: float) -> Result:
    with scratch(system.database) as s:
        if isinstance(system, TaskFlow):
            out = system.enqueue_rows(s, jobs)
            with taskflow_api(s) as port:
                out |= anyio.run(rest_enqueue, port, jobs, backend="asyncio")
            return out
        return {"one by one": system.enqueue(s, "noop", jobs)}


def drain(system: System, task: str, jobs: int, workers: int, timeout: float) -> Result:
    """Queue ``jobs`` with no worker running, start ``workers``, first to last completion."""
    with scratch(system.database) as s:
        system.enqueue(s, task, jobs)
        log = s.home / "workers.log"
        with processes(system.worker(s, workers), s.env, log) as procs:
            peak = poll_until(
                lambda: system.completed(s) >= jobs, procs, timeout, f"{system.name} drain", log
            )
        return {"jobs/s": (jobs - 1) / system.span(s), "peak RSS MB": peak / 2**20}


def w3(system: System, jobs: int, timeout: float) -> Result:
    n = 200
    with scratch(system.database) as s:
        log = s.home / "workers.log"
        with processes(system.worker(s, 1), s.env, log):
            samples = system.latency(s, n)
            if isinstance(system, TaskFlow):
                with taskflow_api(s) as port:
                    samples["REST"] = anyio.run(rest_latency, port, n, backend="asyncio")
    out = {}
    for what, values in samples.items():
        for q in (50, 95, 99):
            out[f"{what} p{q} ms"] = percentile(values, q) * 1000
    return out


def startup(system: System, jobs: int, timeout: float) -> Result:
    """Spawn -> first completion, with one job already queued."""
    with scratch(system.database) as s:
        system.enqueue(s, "noop", 2)
        log = s.home / "workers.log"
        start = time.monotonic()
        with processes(system.worker(s, 1), s.env, log) as procs:
            poll_until(lambda: system.completed(s) >= 1, procs, timeout, "start-up", log)
            return {"s": time.monotonic() - start}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measurements(workloads: list[str], jobs: int) -> list[tuple[str, Callable[..., Result]]]:
    out: list[tuple[str, Callable[..., Result]]] = []
    for w in workloads:
        if w == "w1":
            out.append(("W1 enqueue", w1))
        elif w == "w2":
            out.append(("W2 drain, 1 worker", lambda sy, j, t: drain(sy, "noop", j, 1, t)))
        elif w == "w3":
            out.append(("W3 latency", w3))
        elif w == "w4":
            n = max(2, jobs // 5)
            out.append(
                ("W4 50 ms sleeps, 1 worker", lambda sy, j, t, n=n: drain(sy, "sleep50", n, 1, t))
            )
        elif w == "w5":
            for k in (2, 3):
                out.append(
                    (f"W5 drain, {k} workers", lambda sy, j, t, k=k: drain(sy, "noop", j, k, t))
                )
        elif w == "startup":
            out.append(("worker start-up", startup))
    return out


def make(name: str) -> System:
    if name.startswith("taskflow"):
        return TaskFlow(name)
    if name.startswith("celery"):
        return Celery(name)
    return Dramatiq(name)


# ------------------------------------------------------------------ report

LOWER_IS_BETTER = ("ms", "MB", " s")
LABELS = {
    "taskflow": "TaskFlow",
    "taskflow-nologs": "TaskFlow, no logs",
    "celery": "Celery prefork",
    "celery-threads": "Celery threads32",
    "dramatiq": "Dramatiq 8 thr",
    "dramatiq-threads": "Dramatiq 32 thr",
}


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.1f}" if med < 100 else f"{med:,.0f}"
    lo, hi = min(values), max(values)
    if med < 100:
        return f"{med:,.1f} ({lo:,.1f}-{hi:,.1f})"
    return f"{med:,.0f} ({lo:,.0f}-{hi:,.0f})"


def table(results: dict[str, dict[str, dict[str, list[float]]]], systems: list[str]) -> str:
    """One line per (measurement, metric): each system's median (range), then one line of
    TaskFlow/peer ratios (rates: above 1 is TaskFlow faster; ms, s, MB: below 1 is)."""
    width = 24
    lines = [f"{'measurement':<44}" + "".join(f"{LABELS[s]:>{width}}" for s in systems)]
    for title, rows in results.items():
        metrics: list[str] = []
        for per_system in rows.values():
            metrics += [m for m in per_system if m not in metrics]
        for metric in metrics:
            lines.append(
                f"{(title + ': ' + metric)[:44]:<44}"
                + "".join(f"{fmt(rows.get(s, {}).get(metric, [])):>{width}}" for s in systems)
            )
            tf = rows.get("taskflow", {}).get(metric)
            peer_metric = metric
            if title == "W1 enqueue":
                peer_metric = "one by one"
            elif title == "W3 latency":  # every TaskFlow path against the peers' one path
                peer_metric = "one by one " + metric.rsplit(" ", 2)[-2] + " ms"
            ratios = []
            for s in systems:
                peer = rows.get(s, {}).get(peer_metric)
                if s == "taskflow" or not tf or not peer:
                    ratios.append("")
                else:
                    ratios.append(f"{statistics.median(tf) / statistics.median(peer):.2f}x")
            if any(ratios):
                lines.append(f"{'  TaskFlow/peer':<44}" + "".join(f"{r:>{width}}" for r in ratios))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--only", default=",".join(SYSTEMS), help="systems, comma-separated")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per wait")
    parser.add_argument("--out", help="write every sample as JSON here")
    parser.add_argument(
        "--taskflow-env", default="", help="TASKFLOW_X=v,... for TaskFlow's processes"
    )
    args = parser.parse_args()
    TASKFLOW_ENV.update(kv.split("=", 1) for kv in args.taskflow_env.split(",") if kv)
    systems = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    plan = measurements([w.strip() for w in args.workloads.split(",")], args.jobs)
    results: dict[str, dict[str, dict[str, list[float]]]] = {t: {} for t, _ in plan}
    failures: list[str] = []
    started = time.monotonic()
    for rep in range(args.repeat):
        for title, measure in plan:
            order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
            for name in order:
                t0 = time.monotonic()
                try:
                    result = measure(make(name), args.jobs, args.timeout)
                except Failed as exc:
                    failures.append(f"{title} / {name}: {exc}")
                    print(f"[{rep + 1}/{args.repeat}] {title} {name}: FAILED {exc}", flush=True)
                    continue
                per = results[title].setdefault(name, {})
                for metric, value in result.items():
                    per.setdefault(metric, []).append(value)
                shown = ", ".join(f"{k} {v:,.1f}" for k, v in result.items())
                print(
                    f"[{rep + 1}/{args.repeat}] {title} {name}: {shown}"
                    f" ({time.monotonic() - t0:.0f} s)",
                    flush=True,
                )
    machine = f"{platform.node()} {os.cpu_count()} cores, {platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    print()
    print(f"{args.jobs:,} jobs, {args.repeat} repetitions interleaved, {machine}")
    print(f"median (min-max); {time.monotonic() - started:.0f} s in all")
    print(table(results, systems))
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "jobs": args.jobs,
                    "repeat": args.repeat,
                    "machine": machine,
                    "results": results,
                    "failures": failures,
                },
                indent=2,
            )
        )
    if failures:
        print("\nfailed:\n  " + "\n  ".join(failures))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
