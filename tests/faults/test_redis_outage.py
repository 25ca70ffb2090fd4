"""Scenario: Redis stopped mid-run (`redis-cli shutdown nosave`, then started again). Redis
only accelerates the API: while it is down the rate limits hold per process, the cache is
bypassed, one warning is logged (at most one a minute), and the API answers every request:
no 5xx, nothing lost, every accepted job completes once."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.faults.streaming import check, run_through
from tests.rabbit import Vhost

pytestmark = [pytest.mark.timeout(300), pytest.mark.disruptive]

START = ["redis-server", "--daemonize", "yes", "--port", "6379", "--save", "", "--appendonly", "no"]


def local_redis(url: str) -> None:
    parts = urlsplit(url)
    why = None
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        why = "redis-server is not installed"
    elif parts.hostname not in ("127.0.0.1", "localhost") or (parts.port or 6379) != 6379:
        why = "the test Redis is not this machine's on port 6379"
    if why is not None:
        import os

        if os.environ.get("CI") == "true":
            pytest.fail(f"the Redis outage scenario cannot run: {why}")
        pytest.skip(why)


def up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), 0.5).close()
    except OSError:
        return False
    return True


def start_redis() -> None:
    if not up():
        subprocess.run(START, check=True, timeout=30)
    deadline = time.monotonic() + 20
    while not up():
        assert time.monotonic() < deadline, "Redis did not come back"
        time.sleep(0.1)


def test_redis_stopped_mid_run_costs_no_request(
    tmp_path: Path,
    pg_url: str,
    rabbit_vhost: Vhost,
    redis_url: str,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local_redis(redis_url)
    reads: list[int] = []
    stop_reading = threading.Event()

    def read_metrics(url: str) -> None:  # reads through the cache while Redis goes away
        while not stop_reading.wait(0.05):
            try:
                with urllib.request.urlopen(f"{url}/api/v1/metrics", timeout=10) as response:
                    reads.append(response.status)
            except urllib.error.HTTPError as exc:
                reads.append(exc.code)
            except OSError:
                reads.append(0)

    def outage() -> float:
        api_url = next(p for p in (tmp_path / "api").glob("service-*.log")).name
        port = api_url.removeprefix("service-").removesuffix(".log")
        reader = threading.Thread(target=read_metrics, args=(f"http://127.0.0.1:{port}",))
        reader.start()
        try:
            subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], timeout=30)
            time.sleep(6.0)
        finally:
            back = time.monotonic()
            start_redis()
            time.sleep(2.0)
            stop_reading.set()
            reader.join()
        return back

    try:
        report = run_through(
            tmp_path,
            pg_url,
            rabbit_vhost,
            outage,
            env={
                "TASKFLOW_REDIS_URL": redis_url,
                "TASKFLOW_AMQP_PREFIX": redis_prefix,
                "TASKFLOW_RATE_LIMIT_SUBMIT": "100000/second",
                "TASKFLOW_RATE_LIMIT_READ": "100000/second",
            },
        )
    finally:
        start_redis()
    with capsys.disabled():
        print(report.line("redis down 6 s"))
    check(report)
    assert set(report.statuses) == {202}, report.statuses  # Redis down refuses nothing
    assert reads and set(reads) == {200}, sorted(set(reads))
    log = next((tmp_path / "api").glob("service-*.log")).read_text()
    assert log.count("redis_unavailable") == 1, "one warning for the outage (at most one a minute)"
    assert "redis_recovered" in log
