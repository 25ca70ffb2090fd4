"""Running `taskflow` as a real process for end-to-end tests, and talking HTTP to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


NO_RATE_LIMITS = {
    "TASKFLOW_RATE_LIMIT_SUBMIT": "",
    "TASKFLOW_RATE_LIMIT_READ": "",
    "TASKFLOW_RATE_LIMIT_ADMIN": "",
}


@dataclass
class Service:
    """One `taskflow <command>` process with its own environment and log file."""

    home: Path
    env: dict[str, str]
    command: tuple[str, ...] = ("up",)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / f"service-{self.port}.log"

    def _spawn(self) -> int:
        """Start the process; returns where its output starts in the log."""
        env = {
            **os.environ,
            **NO_RATE_LIMITS,  # these processes take bursts; a test that limits says so
            **self.env,
            "TASKFLOW_HOME": str(self.home),
            "TASKFLOW_PORT": str(self.port),
        }
        self.starts += 1
        mark = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} ---\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "taskflow", *self.command],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return mark

    def _wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"taskflow exited with {self.process.returncode}:\n{self.tail()}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"taskflow did not {what} in {timeout} s:\n{self.tail()}")

    def start(self, timeout: float = 90.0) -> None:
        """Start a process that serves HTTP: ready when its health check answers 200."""
        self._spawn()

        def healthy() -> bool:
            try:
                return http("GET", f"{self.url}/api/v1/health", timeout=2)[0] == 200
            except OSError:
                return False

        self._wait_until(healthy, timeout, "become ready")

    def start_worker(self, timeout: float = 90.0, *, wait: bool = True) -> None:
        """Start a process that serves no HTTP (`taskflow worker`): ready when it says so
        (or at once, ``wait=False``)."""
        mark = self._spawn()
        if not wait:
            return
        self._wait_until(
            lambda: b"taskflow_started" in self.log.read_bytes()[mark:], timeout, "start"
        )

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(60)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.wait(10)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def submit(self, task: str, payloads: list[dict[str, Any]], **extra: Any) -> tuple[int, Any]:
        return http(
            "POST",
            f"{self.url}/api/v1/jobs",
            {"task_type": task, "data": [{"payload": p} for p in payloads], **extra},
        )

    def job(self, job_id: str) -> dict[str, Any]:
        status, body = http("GET", f"{self.url}/api/v1/jobs/{job_id}")
        assert status == 200, body
        return dict(body)

    def wait_terminal(
        self, job_ids: list[str], timeout: float = 120.0
    ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        pending = set(job_ids)
        done: dict[str, dict[str, Any]] = {}
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                job = self.job(job_id)
                if job["status"] in ("completed", "failed", "cancelled"):
                    done[job_id] = job
                    pending.discard(job_id)
            if pending:
                time.sleep(0.2)
        assert not pending, f"{len(pending)} jobs not terminal after {timeout} s:\n{self.tail()}"
        return done
