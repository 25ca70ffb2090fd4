"""The cost per HTTP request of API-key auth and rate limiting, on and off, as ratios against
the `off` baseline of the same run.

    python perf/bench_auth.py --repeat 3 --requests 2000 --out perf/results/bench_auth.json

Variants, each a fresh `taskflow up` (demo tasks, scratch database, home and Redis prefix)
on this machine's PostgreSQL (and Redis for the `*-redis` variants):

  off                  TASKFLOW_AUTH=off, TASKFLOW_RATE_LIMIT_{SUBMIT,READ,ADMIN} empty
  auth                 TASKFLOW_AUTH=required (a key with scope admin), no limits
  limits-memory        no auth, every limit LIMIT (never refuses: only the bookkeeping)
  auth+limits-memory   both, the limits per process
  auth+limits-redis    both, TASKFLOW_REDIS_URL set: one Lua script per request
  off+redis-cache      no auth, no limits, TASKFLOW_REDIS_URL set: the job view cache moves
                       to Redis, so `auth+limits-redis` minus this is auth + the limiter

Workloads, on keep-alive httpx connections: `submit` = sequential POST /api/v1/jobs of one
echo job (the server's in-process workers run them meanwhile, in every variant alike);
`read` = sequential GET /api/v1/jobs/{id} of one completed echo job, served from the view
cache (X-Cache: hit, counted); `read x16` = the same from 16 client threads. Each server is
warmed with 200 submits and 200 reads first.

Each repetition starts every variant's server at once and interleaves them in blocks (100
sequential requests, or 16 x 25 concurrent ones) whose variant order rotates every round,
so load from anything else on the machine falls on all variants alike; servers and their
databases are dropped at the end of the repetition. Per variant and workload: req/s (requests
/ time inside its blocks), mean/p50/p99 latency, and the server process's CPU time per
request (psutil). Ratios and added µs are taken within each repetition against that
repetition's `off`; the table shows the median over repetitions. Every status other than the
expected one (202 submit, 200 read), every cache miss and every server log line (the servers
log at warning) is counted and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from suite import PG, REDIS, percentile, redis_client, with_path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
LIMIT = "1000000/second"
WARMUP = 200
BLOCK = 100
"""Requests per block of a sequential workload; `read x16` blocks are threads x 25."""
SETTLE_SECONDS = 6.0
"""A terminal job's view is cached once it finished 5 s ago; reads start after this."""
CACHE_TTL = 3600
"""Longer than a repetition, so no cached view expires between blocks (default 60 s)."""
SUBMIT_BODY = {"task_type": "echo", "data": [{"payload": {"i": 1}}]}
WORKLOADS = ("submit", "read", "read x16")
Call = Callable[[httpx.Client], httpx.Response]


@dataclass(frozen=True)
class Variant:
    name: str
    auth: bool
    limits: bool
    redis: bool


VARIANTS = (
    Variant("off", auth=False, limits=False, redis=False),
    Variant("auth", auth=True, limits=False, redis=False),
    Variant("limits-memory", auth=False, limits=True, redis=False),
    Variant("auth+limits-memory", auth=True, limits=True, redis=False),
    Variant("auth+limits-redis", auth=True, limits=True, redis=True),
    Variant("off+redis-cache", auth=False, limits=False, redis=True),
)


class Failed(Exception):
    """A server that did not start, or an answer the benchmark cannot go on from."""


@dataclass
class Measurement:
    variant: str
    workload: str
    repetition: int
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    mean_us: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    server_cpu_us: float = 0.0
    """CPU time (user + system) of the server process per request."""
    statuses: dict[str, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    redis: dict[str, float] = field(default_factory=dict)
    """Redis EVALSHA/GET calls and server-side µs inside this variant's blocks (every client
    of this Redis): shows that the `*-redis` variants went through it."""
    latencies_us: list[float] = field(default_factory=list, repr=False)
    cpu_seconds: float = 0.0

    def add(
        self,
        latencies: list[float],
        statuses: Counter[str],
        cache: Counter[str],
        seconds: float,
        cpu: float,
        redis: dict[str, float],
    ) -> None:
        self.latencies_us += [x * 1e6 for x in latencies]
        self.statuses = dict(Counter(self.statuses) + statuses)
        self.cache = dict(Counter(self.cache) + cache)
        self.seconds += seconds
        self.cpu_seconds += cpu
        for key, value in redis.items():
            self.redis[key] = self.redis.get(key, 0.0) + value

    def finish(self) -> None:
        values = self.latencies_us
        self.requests = len(values)
        self.rps = len(values) / self.seconds
        self.mean_us = statistics.fmean(values)
        self.p50_us = percentile(values, 50)
        self.p99_us = percentile(values, 99)
        self.server_cpu_us = self.cpu_seconds * 1e6 / len(values)


# ------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One variant's `taskflow up` on a scratch database (``close`` drops it)."""

    def __init__(self, variant: Variant) -> None:
        token = uuid.uuid4().hex[:10]
        self.variant, self.db, self.prefix = variant, f"bench_auth_{token}", f"bench{token}"
        self.home = Path(tempfile.mkdtemp(prefix="tf-bench-auth-"))
        self.log = self.home / "server.log"
        self.port = free_port()
        self.headers: dict[str, str] = {}
        self.proc: psutil.Popen | None = None
        self.target = ""
        self.settled = 0.0
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLOW_")}
        env |= {
            "TASKFLOW_DATABASE_URL": with_path(PG, f"/{self.db}"),
            "TASKFLOW_HOME": str(self.home),
            "TASKFLOW_DEMO": "1",
            "TASKFLOW_LOG_LEVEL": "warning",
            "TASKFLOW_CACHE_TTL": str(CACHE_TTL),
            "TASKFLOW_AUTH": "required" if variant.auth else "off",
            "TASKFLOW_AMQP_PREFIX": self.prefix,
        }
        for group in ("SUBMIT", "READ", "ADMIN"):
            env[f"TASKFLOW_RATE_LIMIT_{group}"] = LIMIT if variant.limits else ""
        if variant.redis:
            env["TASKFLOW_REDIS_URL"] = REDIS
        self.env = env

    def start(self) -> Server:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        if self.variant.auth:
            made = subprocess.run(
                [PY, "-m", "taskflow", "keys", "create", "bench", "--scopes", "admin"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            self.headers["Authorization"] = f"Bearer {made.stdout.strip().splitlines()[-1]}"
        with self.log.open("ab") as out:
            self.proc = psutil.Popen(
                [PY, "-m", "taskflow", "up", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=5)
                if health.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise Failed(f"{self.variant.name}: taskflow up did not start: {self.logged()}")
            time.sleep(0.1)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers=self.headers, timeout=30
        )

    def cpu(self) -> float:
        assert self.proc is not None
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    def logged(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if line]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except psutil.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        if self.variant.redis:
            keys = redis_client().keys(f"{self.prefix}:*")
            if keys:
                redis_client().delete(*keys)


# ------------------------------------------------------------------ workloads


def expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise Failed(f"{what} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def submit(client: httpx.Client) -> httpx.Response:
    return client.post("/api/v1/jobs", json=SUBMIT_BODY)


def reader(target: str) -> Call:
    def read(client: httpx.Client) -> httpx.Response:
        return client.get(f"/api/v1/jobs/{target}")

    return read


def sequential(
    client: httpx.Client, n: int, call: Call
) -> tuple[list[float], Counter[str], Counter[str]]:
    """Latencies (s), status counts and X-Cache counts of ``n`` calls one after another."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    cache: Counter[str] = Counter()
    for _ in range(n):
        start = time.perf_counter()
        response = call(client)
        latencies.append(time.perf_counter() - start)
        statuses[str(response.status_code)] += 1
        if "X-Cache" in response.headers:
            cache[response.headers["X-Cache"]] += 1
    return latencies, statuses, cache


def redis_stats() -> dict[str, float]:
    """Calls and server-side µs of EVALSHA (the rate-limit script) and GET (the cache)."""
    stats = redis_client().info("commandstats")
    out: dict[str, float] = {}
    for command in ("evalsha", "get"):
        entry = stats.get(f"cmdstat_{command}", {})
        out[f"{command}_calls"] = float(entry.get("calls", 0))
        out[f"{command}_usec"] = float(entry.get("usec", 0))
    return out


def block(
    srv: Server, clients: list[httpx.Client], counts: list[int], call: Call, into: Measurement
) -> None:
    """One block: ``counts[i]`` calls on ``clients[i]``, all clients at once."""
    results: list[tuple[list[float], Counter[str], Counter[str]]] = [
        ([], Counter(), Counter()) for _ in clients
    ]
    barrier = threading.Barrier(len(clients) + 1)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = sequential(clients[i], counts[i], call)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    redis_before, cpu = redis_stats(), srv.cpu()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    cpu = srv.cpu() - cpu
    redis_after = redis_stats()
    into.add(
        [x for r in results for x in r[0]],
        sum((r[1] for r in results), Counter()),
        sum((r[2] for r in results), Counter()),
        seconds,
        cpu,
        {k: v - redis_before.get(k, 0.0) for k, v in redis_after.items()},
    )


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (i < n % parts) for i in range(parts)]


def interleaved(
    servers: list[Server],
    workload: str,
    repetition: int,
    n: int,
    threads: int,
    call_of: Callable[[Server], Call],
) -> list[Measurement]:
    """``n`` requests per server in blocks, the servers' order rotating every round."""
    per_block = BLOCK if threads == 1 else threads * 25
    sizes = [per_block] * (n // per_block) + ([n % per_block] if n % per_block else [])
    out = [Measurement(s.variant.name, workload, repetition) for s in servers]
    clients = [[s.client() for _ in range(threads)] for s in servers]
    try:
        for srv, own in zip(servers, clients, strict=True):  # connections open, not timed
            for client in own:
                for _ in range(5):
                    call_of(srv)(client)
        for round_, size in enumerate(sizes):
            for k in range(len(servers)):
                i = (k + round_) % len(servers)
                block(servers[i], clients[i], split(size, threads), call_of(servers[i]), out[i])
    finally:
        for own in clients:
            for client in own:
                client.close()
    for m in out:
        m.finish()
    return out


def wait_idle(srv: Server, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    with srv.client() as client:
        while time.monotonic() < deadline:
            body = expect(client.get("/api/v1/metrics"), 200, "GET /metrics")
            active = sum(
                body["jobs_by_status"].get(s, 0) for s in ("pending", "scheduled", "in_progress")
            )
            if active == 0:
                return
            time.sleep(0.2)
    raise Failed(f"{srv.variant.name}: jobs still active after {timeout} s")


def prepare(srv: Server) -> None:
    """The read target (a completed echo job) and the warm-up submits."""
    with srv.client() as client:
        body = expect(submit(client), 202, "POST /jobs")
        srv.target = body["taskIds"][0]
        job = expect(client.get(f"/api/v1/jobs/{srv.target}?wait=10"), 200, "GET /jobs/{id}")
        if job["status"] != "completed":
            raise Failed(f"{srv.variant.name}: the echo job is {job['status']}")
        srv.settled = time.monotonic() + SETTLE_SECONDS
        for _ in range(WARMUP):
            expect(submit(client), 202, "POST /jobs (warm-up)")


def warm_reads(srv: Server) -> None:
    time.sleep(max(0.0, srv.settled - time.monotonic()))
    with srv.client() as client:
        for _ in range(WARMUP):
            expect(reader(srv.target)(client), 200, "GET /jobs/{id} (warm-up)")


def repetition(variants: list[Variant], rep: int, n: int, threads: int) -> list[Measurement]:
    servers = [Server(v) for v in variants]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(Server.start, servers))
        for srv in servers:
            prepare(srv)
        for srv in servers:
            wait_idle(srv)
        out = interleaved(servers, "submit", rep, n, 1, lambda s: submit)
        for srv in servers:
            wait_idle(srv)
        for srv in servers:
            warm_reads(srv)
        out += interleaved(servers, "read", rep, n, 1, lambda s: reader(s.target))
        out += interleaved(servers, "read x16", rep, n, threads, lambda s: reader(s.target))
        logged = {s.variant.name: s.logged() for s in servers}
        for m in out:
            m.cache["server_log_lines"] = len(logged[m.variant])
        for name, lines in logged.items():
            for line in lines[:5]:
                print(f"  {name} logged: {line[:300]}", flush=True)
        return out
    finally:
        for srv in servers:
            srv.close()


# ------------------------------------------------------------------ report


def summarize(results: list[Measurement], names: list[str]) -> list[dict[str, Any]]:
    by = {(m.variant, m.workload, m.repetition): m for m in results}
    reps = sorted({m.repetition for m in results})
    rows = []
    for name in names:
        for workload in WORKLOADS:
            ms = [by[(name, workload, r)] for r in reps if (name, workload, r) in by]
            pairs = [(m, by[("off", workload, m.repetition)]) for m in ms]
            if not ms:
                continue
            ratios = [m.rps / b.rps for m, b in pairs]
            rows.append(
                {
                    "variant": name,
                    "workload": workload,
                    "rps": statistics.median(m.rps for m in ms),
                    "mean_us": statistics.median(m.mean_us for m in ms),
                    "p50_us": statistics.median(m.p50_us for m in ms),
                    "p99_us": statistics.median(m.p99_us for m in ms),
                    "server_cpu_us": statistics.median(m.server_cpu_us for m in ms),
                    "ratio": statistics.median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                    "added_mean_us": statistics.median(m.mean_us - b.mean_us for m, b in pairs),
                    "added_cpu_us": statistics.median(
                        m.server_cpu_us - b.server_cpu_us for m, b in pairs
                    ),
                    "redis_evalsha_per_request": statistics.median(
                        m.redis.get("evalsha_calls", 0.0) / m.requests for m in ms
                    ),
                    "redis_get_per_request": statistics.median(
                        m.redis.get("get_calls", 0.0) / m.requests for m in ms
                    ),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'variant':<20} {'workload':<9} {'req/s':>7} {'p50 µs':>7} {'p99 µs':>7} "
        f"{'ratio (min-max)':>17} {'+µs mean':>9} {'srv CPU µs':>10} {'+CPU µs':>8}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        ratio = f"{row['ratio']:.3f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})"
        lines.append(
            f"{row['variant']:<20} {row['workload']:<9} {row['rps']:>7,.0f} "
            f"{row['p50_us']:>7,.0f} {row['p99_us']:>7,.0f} {ratio:>17} "
            f"{row['added_mean_us']:>+9,.0f} {row['server_cpu_us']:>10,.0f} "
            f"{row['added_cpu_us']:>+8,.0f}"
        )
    return "\n".join(lines)


def default_out() -> Path:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "perf/results/bench_auth.json"], cwd=ROOT, check=False
    )
    if ignored.returncode == 0:
        return ROOT / "perf/results/bench_auth.json"
    return Path(tempfile.gettempdir()) / "bench_auth.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="per measurement")
    parser.add_argument("--threads", type=int, default=16, help="clients of `read x16`")
    parser.add_argument(
        "--variants", default=",".join(v.name for v in VARIANTS), help="comma-separated"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    wanted = args.variants.split(",")
    chosen = [v for v in VARIANTS if v.name in wanted]
    unknown = set(wanted) - {v.name for v in chosen}
    if unknown or "off" not in wanted:
        parser.error(f"unknown variants {sorted(unknown)} (and `off` is required)")
    out_path: Path = args.out or default_out()

    load = Path("/proc/loadavg").read_text().split()[:3]
    started = time.monotonic()
    results: list[Measurement] = []
    failures: list[str] = []
    for rep in range(args.repeat):
        shift = rep * len(chosen) // args.repeat
        order = chosen[shift:] + chosen[:shift]
        print(
            f"[{time.monotonic() - started:6.1f}s] repetition {rep + 1}: "
            f"{', '.join(v.name for v in order)}",
            flush=True,
        )
        try:
            results += repetition(order, rep, args.requests, args.threads)
        except (Failed, subprocess.CalledProcessError, httpx.HTTPError) as exc:
            failures.append(f"repetition {rep + 1}: {exc}")
            print(f"  FAILED: {exc}", flush=True)
    elapsed = time.monotonic() - started
    if not results:
        raise SystemExit(f"nothing measured: {failures}")

    rows = summarize(results, [v.name for v in chosen])
    odd = [
        f"repetition {m.repetition + 1} {m.variant} {m.workload}: statuses {m.statuses} "
        f"cache {m.cache}"
        for m in results
        if set(m.statuses) != {"202" if m.workload == "submit" else "200"}
        or m.cache.get("miss", 0)
        or m.cache.get("server_log_lines", 0)
    ]
    total: Counter[str] = Counter()
    for m in results:
        total.update({f"{m.workload} {k}": v for k, v in m.statuses.items()})
        total.update({f"{m.workload} X-Cache {k}": m.cache.get(k, 0) for k in ("hit", "miss")})
    print()
    print(
        f"{args.requests} requests per variant and workload, {args.repeat} repetitions, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load before {' '.join(load)}; {elapsed:.0f} s in all"
    )
    print(
        "median over repetitions; ratio = req/s / off's req/s in the same repetition (min-max);\n"
        "+µs mean = mean latency minus off's; srv CPU µs = server process CPU per request,\n"
        "+CPU µs = that minus off's (both within each repetition)"
    )
    print(table(rows))
    print(f"responses: {dict(sorted((k, v) for k, v in total.items() if v))}")
    for line in odd:
        print(f"unexpected: {line}")
    for line in failures:
        print(f"failed: {line}")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    measurements = [{k: v for k, v in asdict(m).items() if k != "latencies_us"} for m in results]
    out_path.write_text(
        json.dumps(
            {
                "argv": sys.argv,
                "load_before": load,
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "seconds": elapsed,
                "limit": LIMIT,
                "block": BLOCK,
                "summary": rows,
                "measurements": measurements,
                "responses": dict(total),
                "unexpected": odd,
                "failures": failures,
            },
            indent=2,
        )
    )
    print(f"wrote {out_path}")
    if failures or odd:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
