"""In-memory throughput benchmark: TaskFlow embedded (asyncio, trio) against huey and dramatiq.

What it measures, for N no-op jobs and C executors (threads for the peers):

- TaskFlow on anyio's asyncio backend and on trio, through the embedding API
  (``taskflow.testing.embedded``): N jobs submitted with ``submit_many`` in batches of 500,
  and N/10 jobs submitted one by one with ``submit`` (the batching effect).
- huey: ``MemoryHuey`` with a ``Consumer`` of C worker threads (a real worker pipeline:
  enqueue -> in-memory queue -> worker threads dequeue and execute).
- dramatiq: ``StubBroker`` with a ``Worker`` of C worker threads; ``broker.join(queue)``.

Per system: enqueue jobs/s (first submit to last submit returned), drain jobs/s (first submit
to "all done"), end-to-end p50/p99 and queue-wait p50, and peak RSS growth. Every measurement
runs in a fresh child process of this script, one after another, so each starts from the same
cold state and ``ru_maxrss`` (a per-process high-water mark) is that system's own. With
``--repeat R`` the systems are interleaved R times (order rotated each round) and the run
with the median drain rate is reported.

Run: ``invoke bench`` or ``python perf/bench_embedded.py --jobs 20000 --concurrency 64``.
See perf/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

SYSTEMS = ("asyncio", "trio", "huey", "dramatiq")
RESULT_PREFIX = "BENCH-RESULT "
BASELINE = ("asyncio", "batch")
"""The run every ratio is taken against: TaskFlow on asyncio, batched submits."""


@dataclass(kw_only=True)
class Result:
    """One measurement of one system in one child process. Times in seconds."""

    system: str
    mode: str
    """``batch`` (submit_many), ``single`` (one submit per job) or ``one-by-one`` (peers)."""
    jobs: int
    concurrency: int
    enqueue_s: float
    drain_s: float
    stop_s: float
    e2e_p50: float | None
    e2e_p99: float | None
    wait_p50: float | None
    latency_source: str
    rss_base_mib: float
    rss_peak_mib: float
    loadavg_1m: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def enqueue_per_s(self) -> float:
        return self.jobs / self.enqueue_s if self.enqueue_s > 0 else math.inf

    @property
    def drain_per_s(self) -> float:
        return self.jobs / self.drain_s if self.drain_s > 0 else math.inf

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_peak_mib - self.rss_base_mib

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            enqueue_per_s=self.enqueue_per_s,
            drain_per_s=self.drain_per_s,
            rss_growth_mib=self.rss_growth_mib,
        )
        return data


# ---------------------------------------------------------------- helpers


def max_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(samples: Sequence[float], percent: float) -> float | None:
    """Nearest-rank percentile, as TaskFlow's LatencyHistogram computes it."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = math.ceil(percent / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def git_revision() -> str:
    """The commit measured, with ``+dirty`` when the work tree has changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}+dirty" if dirty else head or "unknown"


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------- TaskFlow


def bench_taskflow(
    backend: str, mode: str, jobs: int, concurrency: int, batch: int, timeout: float
) -> Result:
    """N no-op jobs through ``embedded()``; drain ends when ``wait_idle`` returns."""
    import anyio

    from taskflow import JobContext, JobStatus, TaskRegistry
    from taskflow.messages import NewJob
    from taskflow.testing import embedded

    registry = TaskRegistry()

    @registry.task(name="noop")
    async def noop(payload: dict[str, Any], ctx: JobContext) -> None:
        return None

    async def main() -> Result:
        async with embedded(registry, concurrency=concurrency) as tf:
            rss_base = max_rss_mib()
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            if mode == "batch":
                for start in range(0, jobs, batch):
                    size = min(batch, jobs - start)
                    await tf.submit_many([NewJob(task="noop") for _ in range(size)])
            else:
                for _ in range(jobs):
                    await tf.submit("noop")
            t1 = time.perf_counter()
            await tf.wait_idle(timeout=timeout)
            t2 = time.perf_counter()
            snap = tf.metrics()  # what a caller sees the moment the work is done
            rss_peak = max_rss_mib()
            stored = list(tf.store.jobs.values())
            by_status = {s.value: 0 for s in JobStatus}
            for job in stored:
                by_status[job.status.value] += 1
            if by_status[JobStatus.COMPLETED.value] != jobs:
                raise RuntimeError(f"expected {jobs} completed jobs, the store has {by_status}")
            # Ground truth over every job, to check the snapshot against.
            e2e_all = [j.finished_at - j.created_at for j in stored if j.finished_at is not None]
            bus = tf.resources.events
            extra = {
                "store_e2e_p50": percentile(e2e_all, 50),
                "store_e2e_p99": percentile(e2e_all, 99),
                "store_e2e_max": max(e2e_all),
                "snapshot_e2e_count": snap.end_to_end.count,
                "snapshot_succeeded": snap.totals.succeeded,
                "snapshot_submitted": snap.totals.submitted,
                "snapshot_run_time_p50": snap.run_time.p50,
                "events_published": bus.published,
                "events_dropped": snap.events_dropped,
                "event_subscribers": len(bus._subscribers),
                "store_writes": dict(tf.store.writes),
                "actors": snap.actors,
            }
        t3 = time.perf_counter()
        return Result(
            system=backend,
            mode=mode,
            jobs=jobs,
            concurrency=concurrency,
            enqueue_s=t1 - t0,
            drain_s=t2 - t0,
            stop_s=t3 - t2,
            e2e_p50=snap.end_to_end.p50,
            e2e_p99=snap.end_to_end.p99,
            wait_p50=snap.queue_wait.p50,
            latency_source="tf.metrics() snapshot",
            rss_base_mib=rss_base,
            rss_peak_mib=rss_peak,
            loadavg_1m=load,
            extra=extra,
        )

    result: Result = anyio.run(main, backend=backend)
    return result


# ---------------------------------------------------------------- huey


def bench_huey(jobs: int, concurrency: int, timeout: float) -> Result:
    """MemoryHuey + Consumer with ``concurrency`` worker threads; done at N completions.

    MemoryStorage does not block on dequeue, so idle workers poll; the poll interval is set
    to 5-50 ms (huey's defaults are 0.1-10 s) so that polling latency does not count against
    huey. Results are off (``results=False``): nothing is stored per job.
    """
    from huey import MemoryHuey
    from huey.api import Task
    from huey.consumer import Consumer
    from huey.signals import SIGNAL_COMPLETE

    huey = MemoryHuey("bench", results=False, immediate=False)
    done = threading.Event()
    lock = threading.Lock()
    waits: list[float] = []
    e2e: list[float] = []
    completed = 0

    @huey.task()
    def noop(enqueued_at: float) -> None:
        waits.append(time.time() - enqueued_at)

    @huey.signal(SIGNAL_COMPLETE)
    def on_complete(signal: str, task: Task, *args: Any, **kwargs: Any) -> None:
        nonlocal completed
        e2e.append(time.time() - task.args[0])
        with lock:
            completed += 1
            if completed >= jobs:
                done.set()

    consumer = Consumer(
        huey,
        workers=concurrency,
        worker_type="thread",
        periodic=False,
        initial_delay=0.005,
        max_delay=0.05,
        check_worker_health=False,
    )
    consumer.start()
    try:
        rss_base = max_rss_mib()
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        for _ in range(jobs):
            noop(time.time())
        t1 = time.perf_counter()
        if not done.wait(timeout):
            raise TimeoutError(f"huey completed {completed} of {jobs} jobs in {timeout} s")
        t2 = time.perf_counter()
        rss_peak = max_rss_mib()
    finally:
        consumer.stop(graceful=True)
    t3 = time.perf_counter()
    return Result(
        system="huey",
        mode="one-by-one",
        jobs=jobs,
        concurrency=concurrency,
        enqueue_s=t1 - t0,
        drain_s=t2 - t0,
        stop_s=t3 - t2,
        e2e_p50=percentile(e2e, 50),
        e2e_p99=percentile(e2e, 99),
        wait_p50=percentile(waits, 50),
        latency_source="timestamp argument + SIGNAL_COMPLETE",
        rss_base_mib=rss_base,
        rss_peak_mib=rss_peak,
        loadavg_1m=load,
        extra={"config": "MemoryHuey(results=False), Consumer(worker_type=thread)"},
    )


# ---------------------------------------------------------------- dramatiq


def bench_dramatiq(jobs: int, concurrency: int, timeout: float) -> Result:
    """StubBroker (default middleware) + Worker(worker_threads=C); done when join() returns.

    ``join`` waits until every message is acked, which happens after the actor ran.
    """
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    waits: list[float] = []
    e2e: list[float] = []

    class Timing(dramatiq.Middleware):
        """Latency from the message's own timestamp (milliseconds since the epoch)."""

        def before_process_message(
            self, broker: dramatiq.Broker, message: dramatiq.Message
        ) -> None:
            waits.append(time.time() - message.message_timestamp / 1000)

        def after_process_message(
            self,
            broker: dramatiq.Broker,
            message: dramatiq.Message,
            *,
            result: Any = None,
            exception: BaseException | None = None,
        ) -> None:
            e2e.append(time.time() - message.message_timestamp / 1000)

    broker = StubBroker()
    broker.add_middleware(Timing())

    @dramatiq.actor(broker=broker, queue_name="bench")
    def noop() -> None:
        return None

    worker = dramatiq.Worker(broker, worker_threads=concurrency)
    worker.start()
    try:
        rss_base = max_rss_mib()
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        for _ in range(jobs):
            noop.send()
        t1 = time.perf_counter()
        broker.join("bench", timeout=int(timeout * 1000))
        t2 = time.perf_counter()
        rss_peak = max_rss_mib()
    finally:
        worker.stop()
    t3 = time.perf_counter()
    if len(e2e) != jobs or broker.dead_letters:
        raise RuntimeError(f"dramatiq ran {len(e2e)} of {jobs}, {len(broker.dead_letters)} dead")
    return Result(
        system="dramatiq",
        mode="one-by-one",
        jobs=jobs,
        concurrency=concurrency,
        enqueue_s=t1 - t0,
        drain_s=t2 - t0,
        stop_s=t3 - t2,
        e2e_p50=percentile(e2e, 50),
        e2e_p99=percentile(e2e, 99),
        wait_p50=percentile(waits, 50),
        latency_source="message_timestamp (ms) + middleware",
        rss_base_mib=rss_base,
        rss_peak_mib=rss_peak,
        loadavg_1m=load,
        extra={"middleware": [type(m).__name__ for m in broker.middleware]},
    )


# ---------------------------------------------------------------- child / parent


def run_child(spec: str, args: argparse.Namespace) -> int:
    """Run one measurement in this process and print it as one JSON line."""
    system, mode = spec.split(":")
    if system in ("asyncio", "trio"):
        result = bench_taskflow(system, mode, args.jobs, args.concurrency, args.batch, args.timeout)
    elif system == "huey":
        result = bench_huey(args.jobs, args.concurrency, args.timeout)
    elif system == "dramatiq":
        result = bench_dramatiq(args.jobs, args.concurrency, args.timeout)
    else:
        raise SystemExit(f"unknown system {system!r}")
    sys.stdout.write(RESULT_PREFIX + json.dumps(result.to_dict()) + "\n")
    return 0


def plan(systems: Sequence[str], jobs: int) -> list[tuple[str, str, int]]:
    """(system, mode, jobs) for every measurement of one round."""
    single = max(1, jobs // 10)
    steps: list[tuple[str, str, int]] = []
    for system in systems:
        if system in ("asyncio", "trio"):
            steps += [(system, "batch", jobs), (system, "single", single)]
        else:
            steps.append((system, "one-by-one", jobs))
    return steps


def spawn(system: str, mode: str, jobs: int, args: argparse.Namespace) -> Result | str:
    """One child process; its Result, or an error message."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"{system}:{mode}",
        "--jobs",
        str(jobs),
        "--concurrency",
        str(args.concurrency),
        "--batch",
        str(args.batch),
        "--timeout",
        str(args.timeout),
    ]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout + 60, check=False
        )
    except subprocess.TimeoutExpired:
        return f"child did not finish within {args.timeout + 60} s"
    lines = proc.stdout.splitlines()
    found = [line for line in lines if line.startswith(RESULT_PREFIX)]
    noise = [line for line in lines if not line.startswith(RESULT_PREFIX)]
    if noise or proc.stderr.strip():
        sys.stderr.write(
            "".join(f"    | {line}\n" for line in [*noise, *proc.stderr.splitlines()][-20:])
        )
    if proc.returncode != 0 or not found:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"exit {proc.returncode}: {tail}"
    data = json.loads(found[-1][len(RESULT_PREFIX) :])
    for derived in ("enqueue_per_s", "drain_per_s", "rss_growth_mib"):
        data.pop(derived)
    return Result(**data)


LABELS = {
    ("asyncio", "batch"): "TaskFlow asyncio, submit_many",
    ("asyncio", "single"): "TaskFlow asyncio, submit x1",
    ("trio", "batch"): "TaskFlow trio, submit_many",
    ("trio", "single"): "TaskFlow trio, submit x1",
    ("huey", "one-by-one"): "huey MemoryHuey+Consumer",
    ("dramatiq", "one-by-one"): "dramatiq StubBroker+Worker",
}


def median_run(runs: Sequence[Result]) -> Result:
    """The run whose drain rate is the median (lower median for an even count)."""
    ordered = sorted(runs, key=lambda r: r.drain_per_s)
    return ordered[(len(ordered) - 1) // 2]


def ms(value: float | None) -> str:
    """Seconds as milliseconds: one decimal below 10 ms, none above."""
    if value is None:
        return "-"
    return f"{value * 1000:.1f}" if value < 0.01 else f"{value * 1000:.0f}"


def table(rows: Sequence[tuple[tuple[str, str], list[Result]]]) -> str:
    baseline_runs = dict(rows).get(BASELINE)
    baseline = median_run(baseline_runs).drain_per_s if baseline_runs else None
    header = (
        f"{'system':<31} {'jobs':>6} {'enqueue/s':>10} {'drain/s':>8} {'drain range':>13} "
        f"{'TF-aio/x':>8} {'e2e p50':>8} {'e2e p99':>8} {'wait p50':>8} {'RSS +MiB':>8}"
    )
    out = [header, "-" * len(header)]
    for key, runs in rows:
        r = median_run(runs)
        drains = [x.drain_per_s for x in runs]
        spread = f"{min(drains):.0f}-{max(drains):.0f}" if len(runs) > 1 else "-"
        ratio = f"{baseline / r.drain_per_s:.2f}x" if baseline else "-"
        out.append(
            f"{LABELS.get(key, ':'.join(key)):<31} {r.jobs:>6} {r.enqueue_per_s:>10.0f} "
            f"{r.drain_per_s:>8.0f} {spread:>13} {ratio:>8} {ms(r.e2e_p50):>8} "
            f"{ms(r.e2e_p99):>8} {ms(r.wait_p50):>8} {r.rss_growth_mib:>8.1f}"
        )
    return "\n".join(out)


def notes(rows: Sequence[tuple[tuple[str, str], list[Result]]]) -> str:
    """What the table cannot show: metrics coverage, the batching effect."""
    lines = []
    by_key = dict(rows)
    for key, runs in rows:
        if key[0] not in ("asyncio", "trio"):
            continue
        r = median_run(runs)
        x = r.extra
        lines.append(
            f"{LABELS[key]}: snapshot saw {x['snapshot_e2e_count']}/{r.jobs} completions, "
            f"events dropped {x['events_dropped']} of {x['events_published']} published "
            f"x {x['event_subscribers']} subscribers; store (all jobs) e2e p50/p99 "
            f"{ms(x['store_e2e_p50'])}/{ms(x['store_e2e_p99'])} ms; "
            f"{r.rss_growth_mib * 2**20 / r.jobs:.0f} B RSS per job"
        )
    for backend in ("asyncio", "trio"):
        batched, single = by_key.get((backend, "batch")), by_key.get((backend, "single"))
        if batched and single:
            b, s = median_run(batched), median_run(single)
            lines.append(
                f"batching effect ({backend}): enqueue x{b.enqueue_per_s / s.enqueue_per_s:.1f}, "
                f"drain x{b.drain_per_s / s.drain_per_s:.2f} (submit_many of {b.jobs} "
                f"vs submit of {s.jobs})"
            )
    return "\n".join(lines)


def run_parent(args: argparse.Namespace) -> int:
    systems = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    steps = plan(systems, args.jobs)
    started = datetime.now(UTC)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "git": git_revision(),
        "loadavg_start": os.getloadavg(),
        "versions": {d: version(d) for d in ("taskflow", "anyio", "trio", "huey", "dramatiq")},
    }
    print(
        f"# {meta['started']}  N={args.jobs}  C={args.concurrency}  batch={args.batch}  "
        f"repeat={args.repeat}  git {meta['git']}  Python {meta['python']}  {meta['cpus']} CPUs  "
        f"load {meta['loadavg_start'][0]:.2f}",
        flush=True,
    )
    results: dict[tuple[str, str], list[Result]] = {(s, m): [] for s, m, _ in steps}
    errors: list[str] = []
    total = len(steps) * args.repeat
    n = 0
    for round_no in range(args.repeat):
        shift = round_no % len(steps)
        for system, mode, jobs in steps[shift:] + steps[:shift]:
            n += 1
            print(
                f"[{n}/{total}] {system} {mode} N={jobs} ...", end=" ", file=sys.stderr, flush=True
            )
            t = time.perf_counter()
            outcome = spawn(system, mode, jobs, args)
            took = time.perf_counter() - t
            if isinstance(outcome, str):
                errors.append(f"{system} {mode}: {outcome}")
                print(f"FAILED ({outcome})", file=sys.stderr, flush=True)
                continue
            results[(system, mode)].append(outcome)
            print(
                f"{outcome.drain_per_s:.0f} jobs/s drained ({took:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    rows = [(key, runs) for key, runs in results.items() if runs]
    print()
    print(table(rows))
    print()
    print(notes(rows))
    print(
        "\nlatencies in ms; TF-aio/x = TaskFlow-asyncio (submit_many) drain/s / this row's "
        "drain/s (<1: that system drains faster); median run of "
        f"{args.repeat} by drain/s; wall {time.perf_counter() - T_START:.0f} s; "
        f"load {os.getloadavg()[0]:.2f} at end"
    )
    for error in errors:
        print(f"ERROR {error}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta["loadavg_end"] = os.getloadavg()
        payload = {
            "meta": meta,
            "summary": [{"system": k[0], "mode": k[1], **median_run(v).to_dict()} for k, v in rows],
            "runs": [r.to_dict() for _, runs in rows for r in runs],
            "errors": errors,
        }
        out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {out}")
    return 1 if errors else 0


T_START = time.perf_counter()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per system")
    parser.add_argument("--concurrency", type=int, default=64, help="executors / worker threads")
    parser.add_argument(
        "--only", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}"
    )
    parser.add_argument("--batch", type=int, default=500, help="jobs per submit_many call")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per measurement")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.batch < 1 or args.repeat < 1:
        parser.error("--jobs, --concurrency, --batch and --repeat must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        return run_child(args.child, args)
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
