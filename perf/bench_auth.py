"""The cost per request of API keys and rate limits, on and off, on `taskflow up`.

    python perf/bench_auth.py [--repeat 3] [--requests 2000]

Each variant is a fresh `taskflow up` on a scratch PostgreSQL database: `off` (no keys, no
limits), `auth` (TASKFLOW_AUTH=required), `limits` (per-process limits), `auth+limits`, and
`auth+limits-redis` (limits through Redis: one Lua script per request). Limits are set high
enough never to refuse, so only the bookkeeping is measured. Workloads, over one keep-alive
connection: `read` (GET of a completed job, a cache hit) and `submit` (POST of one echo
job). Variants are interleaved in each repetition (rotated); medians are reported, with the
ratio of requests/s to `off` and the added microseconds per request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.bench_http import with_db  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """One keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body)
        self.conn.request(
            method, path, payload, {"Content-Type": "application/json", **(headers or {})}
        )
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"null")


HIGH = "1000000/second"
VARIANTS: dict[str, dict[str, str]] = {
    "off": {"TASKFLOW_AUTH": "off"},
    "auth": {"TASKFLOW_AUTH": "required"},
    "limits": {"TASKFLOW_AUTH": "off", "LIMITS": "1"},
    "auth+limits": {"TASKFLOW_AUTH": "required", "LIMITS": "1"},
    "auth+limits-redis": {"TASKFLOW_AUTH": "required", "LIMITS": "1", "REDIS": "1"},
}


class Server:
    def __init__(self, base_url: str, variant: str, redis_url: str) -> None:
        self.db = f"bench_auth_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.base_url = base_url
        self.home = tempfile.mkdtemp(prefix="tf-bench-auth-")
        spec = VARIANTS[variant]
        limits = HIGH if spec.get("LIMITS") else ""
        self.env = {
            **os.environ,
            "TASKFLOW_DATABASE_URL": with_db(base_url, self.db),
            "TASKFLOW_HOME": self.home,
            "TASKFLOW_AUTH": spec["TASKFLOW_AUTH"],
            "TASKFLOW_RATE_LIMIT_SUBMIT": limits,
            "TASKFLOW_RATE_LIMIT_READ": limits,
            "TASKFLOW_RATE_LIMIT_ADMIN": limits,
            "TASKFLOW_LOG_LEVEL": "warning",
        }
        if spec.get("REDIS"):
            self.env["TASKFLOW_REDIS_URL"] = redis_url
            self.env["TASKFLOW_AMQP_PREFIX"] = f"bench{uuid.uuid4().hex[:6]}"
        self.headers: dict[str, str] = {}
        if spec["TASKFLOW_AUTH"] == "required":
            created = subprocess.run(
                [sys.executable, "-m", "taskflow", "keys", "create", "bench", "--scopes", "admin"],
                env=self.env, capture_output=True, text=True, check=True, timeout=120,
            )  # fmt: skip
            self.headers["Authorization"] = "Bearer " + created.stdout.strip().splitlines()[-1]
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "taskflow", "up", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if Client(self.port).call("GET", "/api/v1/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{variant}: taskflow up did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def timed(
    client: Any, method: str, path: str, body: Any, n: int, headers: dict[str, str]
) -> dict[str, float]:
    latencies, bad = [], 0
    started = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        status, _ = client.call(method, path, body, headers)
        latencies.append(time.perf_counter() - t)
        bad += status >= 300
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": n / elapsed,
        "mean_us": statistics.fmean(latencies) * 1e6,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "errors": bad,
    }


def measure(server: Server, n: int) -> dict[str, dict[str, float]]:
    client = Client(server.port)
    h = server.headers
    job = {"task_type": "echo", "data": [{"payload": {"i": 1}}]}
    status, body = client.call("POST", "/api/v1/jobs", job, h)
    assert status == 202, body
    (job_id,) = body["taskIds"]
    status, body = client.call("GET", f"/api/v1/jobs/{job_id}?wait=10", None, h)
    assert body["status"] == "completed", body
    time.sleep(5.5)  # a terminal job's view is cached 5 s after it finished
    client = Client(server.port)  # (hypercorn closed the idle connection meanwhile)
    path = f"/api/v1/jobs/{job_id}"
    timed(client, "GET", path, None, 200, h)  # warm-up
    return {
        "read": timed(client, "GET", path, None, n, h),
        "submit": timed(client, "POST", "/api/v1/jobs", job, n // 2, h),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "TASKFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", default="perf/results/bench_auth.json")
    args = parser.parse_args()
    names = list(VARIANTS)
    samples: dict[str, dict[str, list[dict[str, float]]]] = {v: {} for v in names}
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    for r in range(args.repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            server = Server(args.database_url, name, args.redis_url)
            try:
                for workload, result in measure(server, args.requests).items():
                    samples[name].setdefault(workload, []).append(result)
            finally:
                server.stop()
            print(f"rep {r + 1} {name} done", flush=True)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        summary[name] = {
            w: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
            for w, runs in samples[name].items()
        }
    print(f"\n{'variant':<20} {'workload':<8} {'req/s':>8} {'p50 us':>8} {'p99 us':>8} "
          f"{'vs off':>7} {'+us/req':>8} {'errors':>6}")  # fmt: skip
    for name in names:
        for workload, m in summary[name].items():
            base = summary["off"][workload]
            print(
                f"{name:<20} {workload:<8} {m['rps']:>8.0f} {m['p50_us']:>8.0f} "
                f"{m['p99_us']:>8.0f} {m['rps'] / base['rps']:>6.2f}x "
                f"{m['mean_us'] - base['mean_us']:>+8.0f} {m['errors']:>6.0f}"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"samples": samples, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
