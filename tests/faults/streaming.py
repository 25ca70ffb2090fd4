"""A steady stream of submissions over HTTP while a dependency is taken away and given back.

Scenarios 2 (RabbitMQ `stop_app`) and 3 (PostgreSQL restart) share it: an API and two
workers run `record` jobs of 5-50 ms submitted in batches every 0.2 s; the fault is
injected a few seconds in; submissions go on through it. Every response is kept: a
submission the API could not make durable must be refused with 503, `Retry-After` and the
error envelope, never a 500; every accepted job must complete, once.
"""

from __future__ import annotations

import abc
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.service import Service
from tests.e2e.test_distributed import executions
from tests.faults.harness import (
    base_env,
    completed_twice,
    query,
    service,
    stop_all,
    wait_all_terminal,
)
from tests.rabbit import Vhost


@dataclass
class Response:
    status: int
    ids: list[str]
    code: str | None = None
    retry_after: str | None = None
    seconds: float = 0.0
    at: float = 0.0


@dataclass(kw_only=True)
class Background(abc.ABC):
    """A loop in a daemon thread (``_run``, which watches ``_stop``), started and stopped."""

    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @abc.abstractmethod
    def _run(self) -> None: ...


@dataclass
class Submitter(Background):
    """Submit `batch` jobs every `every` seconds from a thread, keeping every response."""

    api: Service
    batch: int = 50
    every: float = 0.2
    limit: int | None = None
    """Stop after this many jobs were submitted (accepted or not)."""
    submitted: int = 0
    responses: list[Response] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def _run(self) -> None:
        rng = random.Random(7)
        next_at = time.monotonic()
        while not self._stop.is_set():
            size = (
                self.batch if self.limit is None else min(self.batch, self.limit - self.submitted)
            )
            if size <= 0:
                return
            self.submitted += size
            payloads = [{"ms": rng.randint(5, 50)} for _ in range(size)]
            began = time.monotonic()
            response = self._submit(payloads)
            response.seconds, response.at = time.monotonic() - began, began
            self.responses.append(response)
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _submit(self, payloads: list[dict[str, int]]) -> Response:
        body = {"task_type": "record", "data": [{"payload": p} for p in payloads]}
        request = urllib.request.Request(
            f"{self.api.url}/api/v1/jobs",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Response(response.status, list(json.loads(response.read())["taskIds"]))
        except urllib.error.HTTPError as exc:
            error = json.loads(exc.read() or b"{}").get("error", {})
            return Response(exc.code, [], error.get("code"), exc.headers.get("Retry-After"))
        except OSError as exc:  # a request that never got an answer: not accepted
            self.errors.append(repr(exc))
            return Response(0, [])

    @property
    def accepted(self) -> list[str]:
        return [i for r in self.responses for i in r.ids]


@dataclass
class Report:
    jobs: int
    refused: int
    statuses: Counter[int]
    lost: int
    completed_twice: int
    same_attempt_twice: int
    recovery: float
    stall: float
    elapsed: float
    client_errors: list[str]
    refusals_without_retry_after: int
    refusal_codes: Counter[str | None]
    slowest_answer: float

    def line(self, name: str) -> str:
        return (
            f"\n{name}: jobs={self.jobs} faults=1 lost={self.lost} "
            f"duplicated={self.completed_twice} same_attempt_twice={self.same_attempt_twice} "
            f"max_recovery_s={self.recovery:.1f} longest_stall_s={self.stall:.1f} refused_503={self.refused} "
            f"statuses={dict(self.statuses)} codes={dict(self.refusal_codes)} "
            f"slowest_answer_s={self.slowest_answer:.1f} "
            f"elapsed_s={self.elapsed:.1f}"
        )


def completed_count(pg_url: str) -> int:
    (n,) = query(pg_url, "SELECT count(*) FROM completions")[0]
    return int(n)


@dataclass
class CompletionMonitor(Background):
    """Samples the number of completions every 50 ms (from a thread; a sample that fails
    while the database is down is skipped)."""

    pg_url: str
    samples: list[tuple[float, int]] = field(default_factory=list)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.samples.append((time.monotonic(), completed_count(self.pg_url)))
            except Exception:
                continue

    def longest_stall(self) -> float:
        """The longest time without a new completion."""
        gaps, last_change, last_count = [0.0], None, -1
        for at, count in self.samples:
            if count != last_count:
                if last_change is not None:
                    gaps.append(at - last_change)
                last_change, last_count = at, count
        return max(gaps)

    def recovery_after(self, back: float) -> float:
        """From ``back`` (the dependency given back) to the first completion after it."""
        before = [c for at, c in self.samples if at <= back]
        base = before[-1] if before else 0
        for at, count in self.samples:
            if at > back and count > base:
                return at - back
        return float("inf")


def run_through(
    tmp_path: Path,
    pg_url: str,
    vhost: Vhost,
    fault: Callable[[], float],
    *,
    before: float = 3.0,
    after: float = 4.0,
    workers: int = 2,
    env: dict[str, str] | None = None,
) -> Report:
    """Stream submissions; `before` s in, run `fault` (it returns the moment the dependency
    was given back); stream `after` s more; wait for every accepted job. Recovery is from
    the dependency's return to the first completion after it."""
    env = base_env(pg_url, vhost, **(env or {}))
    api = service(tmp_path, "api", env, "api")
    pool = [service(tmp_path, f"w{i}", env, "worker") for i in range(workers)]
    submitter = Submitter(api)
    monitor = CompletionMonitor(pg_url)
    try:
        api.start()
        for worker in pool:
            worker.start_worker()
        started = time.monotonic()
        submitter.start()
        monitor.start()
        time.sleep(before)
        back = fault()
        time.sleep(max(0.0, after - (time.monotonic() - back)))
        submitter.stop()
        accepted = submitter.accepted
        wait_all_terminal(pg_url, len(accepted), timeout=180)
        monitor.stop()
        elapsed = time.monotonic() - started
        for p in (api, *pool):
            assert p.process is not None and p.process.poll() is None, p.tail()
        stored = {
            str(r[0]): str(r[1])
            for r in query(pg_url, "SELECT id::text, status FROM taskflow_jobs")
        }
        lost = [i for i in accepted if stored.get(i) != "completed"]
        per_attempt = Counter((j, a) for j, a, _, _ in executions(pg_url))
        return Report(
            jobs=len(accepted),
            refused=sum(1 for r in submitter.responses if r.status == 503),
            statuses=Counter(r.status for r in submitter.responses),
            lost=len(lost),
            completed_twice=len(completed_twice(pg_url)),
            same_attempt_twice=sum(1 for n in per_attempt.values() if n > 1),
            recovery=monitor.recovery_after(back),
            stall=monitor.longest_stall(),
            elapsed=elapsed,
            client_errors=submitter.errors,
            refusals_without_retry_after=sum(
                1 for r in submitter.responses if r.status == 503 and not r.retry_after
            ),
            refusal_codes=Counter(r.code for r in submitter.responses if r.status != 202),
            slowest_answer=max(r.seconds for r in submitter.responses),
        )
    finally:
        monitor.stop()
        submitter.stop()
        stop_all([api, *pool])


def check(report: Report) -> None:
    """What every streaming scenario must show."""
    assert report.jobs > 0
    assert report.lost == 0
    assert report.completed_twice == 0
    assert report.same_attempt_twice == 0
    assert report.recovery < 30
    assert set(report.statuses) <= {202, 503}, report.statuses  # never a 500, never a hang
    assert not report.client_errors, report.client_errors
    assert report.refusals_without_retry_after == 0
    assert report.slowest_answer < 15, report.slowest_answer  # refused, not left hanging
    assert set(report.refusal_codes) <= {"store_error", "transport_error", "dependency_unavailable"}
