"""What live Server-Sent Event subscribers cost one `taskflow api` process: broker resources,
and the drain rate of queued no-op jobs by one worker.

    python perf/bench_streams.py [--jobs 10000] [--subscribers 200] [--repeat 3] [--out F]

Each sample gets a scratch vhost and database (`suite.scratch`), a `taskflow api` (read
rate limit off) and, as in the suite's W2, `--jobs` no-op jobs queued with the Python
producer while no worker runs. Then, per variant, N subscribers connect from a separate
client process (asyncio, raw HTTP/1.1, nice `--client-nice`). It stands for remote browsers:
it asks for `Accept-Encoding: gzip, deflate, br` as they do (but in `N x /events`), inflates
what comes deflated, counts every frame in C with `bytes.count`, and decodes only the JSON
of `snapshot`, `dropped` and `end`. Variants: `0 subs` (no client); `N x /events` (each on
`/api/v1/events?limit=0`, every event to every subscriber: the firehose, uncompressed, as a
client that sends no `Accept-Encoding` gets it); `N x /events, deflate` (the same as a
browser asks for it: compressed by the API, inflated by the client on this machine);
`N x jobs page` (each the stream the jobs page opens: `?activity=submitted,replayed&jobs=`
its 20 rows, the batch's newest); `N x /jobs/{id}` (each on `/api/v1/jobs/{id}/events` of a
different job, spread over the batch: operators on job pages).
Once every stream has its `snapshot`, one `taskflow worker` starts; the drain runs until
PostgreSQL counts every job completed. Variants alternate in each repetition (rotated).

Numbers: `drain jobs/s` is (jobs - 1) / (last - first `finished_at`), the suite's W2 (the
suite's producer adds one warm-up job: it is counted); `vs 0 subs` the ratio of the medians
(the target: >= 0.90 with N subscribers); `API CPU s` and `client CPU s` the CPU time of the
API process and of the subscriber process from the worker's start to the last completion
(`, all`: until every stream had its last event). Streams: `events` (frames with an
`event:` field) and `succeeded` per stream, min / median, as the subscribers counted them;
`got dropped` the streams that got a `dropped` event, `events lost` the sum of what those
said; `ended early` the streams that ended before being told to stop (a job stream: with
an `end` other than `terminal`); `lag s` from the last completion to the last `succeeded`
any stream saw. Broker: queues / consumers / connections / channels in the scratch vhost
(`rabbitmqctl`) at `api` (API up, jobs queued), `subscribed` (streams open, no worker),
`drained` (worker running, streams open), `after` (streams closed, worker running).
EventHub: `actors.hub` of `GET /api/v1/metrics` (listeners; events from the bus; dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import time
import urllib.request
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from suite import (  # noqa: E402
    PY,
    Failed,
    Scratch,
    TaskFlow,
    fmt,
    poll_until,
    processes,
    scratch,
    taskflow_api,
)

VARIANTS = ("none", "all", "deflate", "page", "job")
PAGE_ROWS = 20
"""Rows of the jobs page: the page watches these jobs (``jobs=``) and ``activity``."""
PHASES = ("api", "subscribed", "drained", "after")
COUNTED = ("queues", "consumers", "connections", "channels")


# ------------------------------------------------------------------ the subscriber process


@dataclass
class Stream:
    """What one subscriber saw."""

    path: str
    deflate: bool = False
    """Whether it asks for ``Content-Encoding: deflate``, as a browser does."""
    status: int = 0
    snapshot: bool = False
    events: int = 0
    """Frames with an ``event:`` (the snapshot, lifecycle events, dropped, end)."""
    succeeded: int = 0
    keepalives: int = 0
    dropped: int = 0
    """The largest count a ``dropped`` event gave (events this stream lost)."""
    dropped_frames: int = 0
    end: str | None = None
    early: bool = False
    error: str | None = None
    bytes: int = 0
    """Bytes received (compressed, when it was)."""
    text_bytes: int = 0
    """Bytes of SSE text (after inflating)."""
    encoding: str = ""
    last_succeeded: float = 0.0
    last_data: float = 0.0

    def feed(self, text: bytes, stopping: bool) -> None:
        """Count the complete frames in ``text`` (ending at a blank line). A subscriber
        stands for a remote browser, so it must cost this machine little: frames are
        counted in C (``bytes.count``), and only the rare ``snapshot``, ``dropped`` and
        ``end`` frames are parsed, with their JSON."""
        self.keepalives += text.count(b"\n: keep-alive\n")
        events = text.count(b"\nevent: ")
        self.events += events
        succeeded = text.count(b"\nevent: succeeded\n")
        if succeeded:
            self.succeeded += succeeded
            self.last_succeeded = time.time()
        if events == succeeded + text.count(b"\nevent: started\n"):
            return  # the bulk of a drain: no frame to parse
        for found in RARE.finditer(text):
            kind = found.group(1)
            body = json.loads(b"\n".join(line[6:] for line in found.group(2).splitlines()))
            if kind == b"snapshot":
                self.snapshot = True
            elif kind == b"dropped":
                self.dropped_frames += 1
                self.dropped = max(self.dropped, int(body.get("total", body["dropped"])))
            elif kind == b"end":
                self.end = str(body.get("reason"))
                job_done = "/jobs/" in self.path and self.end == "terminal"
                self.early = not (stopping or job_done)


RARE = re.compile(rb"\nevent: (snapshot|dropped|end)\n((?:data: [^\n]*\n)+)")
"""The frames a subscriber parses: its snapshot, what it lost, its end."""


async def subscribe(port: int, stream: Stream, stopping: asyncio.Event) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    except OSError as exc:
        stream.error = f"connect: {exc}"
        return
    try:
        accept = "Accept-Encoding: gzip, deflate, br\r\n" if stream.deflate else ""
        writer.write(
            f"GET {stream.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Accept: text/event-stream\r\n{accept}\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        stream.status = int(head.split(b" ", 2)[1])
        if stream.status != 200:
            stream.error = f"HTTP {stream.status}"
            return
        chunked = b"transfer-encoding: chunked" in head.lower()
        if b"content-encoding: deflate" in head.lower():
            stream.encoding = "deflate"
            await read_deflated(reader, stream, stopping, chunked)
            return
        # The frames are counted in the body as it arrives, chunk headers and all: the
        # server writes whole frames, so a chunk's size line only ever sits between two
        # frames, and the patterns counted never span one. Each piece handed to ``feed``
        # starts with the newline that ended the frame before it.
        pending = b"\n"
        while stream.end is None:
            data = await read_some(reader, stream, stopping)
            if data is None:
                return
            pending = feed_text(stream, pending + data, stopping)
            if chunked and pending.endswith(b"\r\n0\r\n\r\n") and stream.end is None:
                stream.early = not stopping.is_set()
                stream.end = "body ended"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()


async def read_some(
    reader: asyncio.StreamReader, stream: Stream, stopping: asyncio.Event
) -> bytes | None:
    """What the socket has (counted as sent and as text), or ``None`` at its end."""
    data = await reader.read(1 << 20)
    if not data:
        stream.early = not stopping.is_set()
        stream.end = stream.end or "eof"
        return None
    stream.bytes += len(data)
    stream.text_bytes += len(data)
    stream.last_data = time.monotonic()
    return data


def feed_text(stream: Stream, pending: bytes, stopping: asyncio.Event) -> bytes:
    """Every complete frame of ``pending`` to ``stream.feed`` at once; the rest is returned
    to wait for more."""
    cut = pending.rfind(b"\n\n")
    if cut < 0:
        return pending
    stream.feed(pending[: cut + 1], stopping.is_set())
    return pending[cut + 1 :]


async def read_deflated(
    reader: asyncio.StreamReader, stream: Stream, stopping: asyncio.Event, chunked: bool
) -> None:
    """A deflated body: the chunks' sizes taken off, the rest inflated (as a browser
    does), then the frames counted in the text as ``subscribe`` counts them."""
    inflater = zlib.decompressobj()
    raw = b""
    pending = b"\n"
    while stream.end is None:
        data = await read_some(reader, stream, stopping)
        if data is None:
            return
        raw += data
        body, raw, last = dechunk(raw) if chunked else (raw, b"", False)
        text = inflater.decompress(body)
        stream.text_bytes += len(text) - len(data)  # read_some counted the raw bytes
        pending = feed_text(stream, pending + text, stopping)
        if last and stream.end is None:
            stream.early = not stopping.is_set()
            stream.end = "body ended"


def dechunk(raw: bytes) -> tuple[bytes, bytes, bool]:
    """The data of the complete chunks at the start of ``raw``, what is left, and whether
    the last (empty) chunk came."""
    out: list[bytes] = []
    at = 0
    while True:
        line_end = raw.find(b"\r\n", at)
        if line_end < 0:
            break
        size = int(raw[at:line_end].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(out), b"", True
        start = line_end + 2
        if len(raw) < start + size + 2:
            break
        out.append(raw[start : start + size])
        at = start + size + 2
    return b"".join(out), raw[at:], False


def settled(stream: Stream, expect: int, now: float) -> bool:
    """Done after ``stop``: it saw what it expected, ended, or has been idle for 3 s."""
    if stream.error or stream.end is not None:
        return True
    return stream.succeeded >= expect or now - stream.last_data > 3.0


async def client(spec: dict[str, Any]) -> None:
    """The subscriber process: ``{"ready": ...}`` once every stream has its snapshot; on a
    ``stop`` line from stdin, waits (``grace`` s at most) for the streams to settle, closes
    them and prints ``{"streams": [...]}``."""
    streams = [Stream(path=p, deflate=spec["deflate"]) for p in spec["paths"]]
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(subscribe(spec["port"], s, stopping)) for s in streams]
    deadline = time.monotonic() + spec["timeout"]
    while not all(s.snapshot or s.error or s.end for s in streams):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    ready = sum(s.snapshot for s in streams)
    print(json.dumps({"ready": ready, "errors": sum(bool(s.error) for s in streams)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stopping.set()
    deadline = time.monotonic() + spec["grace"]
    while time.monotonic() < deadline:
        now = time.monotonic()
        if all(settled(s, spec["expect"], now) for s in streams):
            break
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = {"streams": [asdict(s) for s in streams], "cpu": time.process_time()}
    print(json.dumps(result), flush=True)


def client_main(path: str) -> None:
    spec = json.loads(Path(path).read_text())
    if spec["nice"] == "idle":  # only the CPU time nothing else wants, as remote browsers
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(int(spec["nice"]))
    asyncio.run(client(spec))


# ------------------------------------------------------------------ the benchmark side


def read_line(proc: psutil.Popen, timeout: float, what: str) -> dict[str, Any]:
    """One JSON line from the subscriber process, within ``timeout`` seconds."""
    fd, buf = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failed(f"{what}: the subscriber process did not answer in {timeout:.0f} s")
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise Failed(f"{what}: the subscriber process exited ({proc.poll()})")
            buf += chunk
    return dict(json.loads(buf.split(b"\n", 1)[0]))


def rabbit_rows(*args: str) -> list[list[str]]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args, "--no-table-headers"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def broker_counts(s: Scratch) -> dict[str, int]:
    """Queues, their consumers, connections and their channels in the scratch vhost."""
    vhost = urlsplit(s.amqp).path[1:]
    queues = rabbit_rows("list_queues", "-p", vhost, "name", "consumers")
    connections = [c for c in rabbit_rows("list_connections", "vhost", "channels") if c[0] == vhost]
    return {
        "queues": len(queues),
        "consumers": sum(int(q[1]) for q in queues),
        "connections": len(connections),
        "channels": sum(int(c[1]) for c in connections),
    }


def hub_stats(port: int) -> dict[str, Any]:
    """The API's EventHub statistics (``GET /api/v1/metrics``: ``actors.hub``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=30) as r:
        return dict(json.loads(r.read())["actors"].get("hub", {}))


def api_process() -> psutil.Process:
    for child in psutil.Process().children():
        if child.cmdline()[-2:] == ["taskflow", "api"]:
            return child
    raise Failed("the taskflow api process was not found")


def cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def job_ids(s: Scratch) -> list[str]:
    assert s.db
    with psycopg.connect(s.db) as conn:
        return [
            str(r[0]) for r in conn.execute("SELECT id FROM taskflow_jobs ORDER BY created_at, id")
        ]


def job_paths(s: Scratch, n: int, jobs: int) -> list[str]:
    """``n`` job streams, on jobs spread evenly over the batch (in submission order)."""
    ids = job_ids(s)
    return [f"/api/v1/jobs/{ids[i * len(ids) // n]}/events" for i in range(n)]


def page_paths(s: Scratch, n: int) -> list[str]:
    """``n`` jobs pages, each the stream the page opens: its newest rows, and activity."""
    newest = ",".join(job_ids(s)[-PAGE_ROWS:])
    return [f"/api/v1/events?limit=0&activity=submitted,replayed&jobs={newest}"] * n


def log_problems(*logs: Path) -> list[str]:
    """Lines of the processes' logs at warning level or above, or with a traceback."""
    found = []
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            low = line.lower()
            if any(w in low for w in ("[warning", "[error", "[critical", "traceback", "exception")):
                found.append(f"{log.name}: {line.strip()[:200]}")
    return found


def measure(variant: str, jobs: int, n: int, timeout: float, nice: str) -> dict[str, Any]:
    system = TaskFlow("taskflow")
    subs = 0 if variant == "none" else n
    out: dict[str, Any] = {"variant": variant, "subscribers": subs, "broker": {}}
    with scratch(True) as s:
        s.env["TASKFLOW_RATE_LIMIT_READ"] = ""  # 200 streams are not a runaway client
        logs = [s.home / "api.log", s.home / "workers.log", s.home / "subscribers.log"]
        try:
            with taskflow_api(s) as port:
                api = api_process()
                system.enqueue(s, "noop", jobs)
                total = int(system._sql(s, "SELECT count(*) FROM taskflow_jobs"))  # + 1 warm-up
                out["jobs"] = total
                out["broker"]["api"] = broker_counts(s)
                client: psutil.Popen | None = None
                try:
                    if subs:
                        paths = {
                            "all": lambda: ["/api/v1/events?limit=0"] * subs,
                            "deflate": lambda: ["/api/v1/events?limit=0"] * subs,
                            "page": lambda: page_paths(s, subs),
                            "job": lambda: job_paths(s, subs, jobs),
                        }[variant]()
                        spec = {
                            "port": port,
                            "paths": paths,
                            "expect": {"all": total, "deflate": total, "page": PAGE_ROWS}.get(
                                variant, 1
                            ),
                            "deflate": variant != "all",
                            "timeout": timeout,
                            "grace": timeout,
                            "nice": nice,
                        }
                        spec_file = s.home / "subscribers.json"  # too long for argv
                        spec_file.write_text(json.dumps(spec))
                        with logs[2].open("ab") as err:
                            client = psutil.Popen(
                                [PY, __file__, "--client", str(spec_file)],
                                cwd=HERE,
                                stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE,
                                stderr=err,
                            )
                        ready = read_line(client, timeout, "snapshots")
                        if ready["ready"] != subs:
                            raise Failed(f"{ready['ready']} of {subs} streams got a snapshot")
                        deadline = time.monotonic() + 10
                        while hub_stats(port).get("listeners", 0) < subs:
                            if time.monotonic() > deadline:
                                break  # reported below, not fatal
                            time.sleep(0.2)
                    out["hub subscribed"] = hub_stats(port)
                    out["broker"]["subscribed"] = broker_counts(s)

                    def done(c: psutil.Popen | None = client) -> bool:
                        if c is not None and c.poll() is not None:
                            raise Failed(f"the subscriber process exited with {c.returncode}")
                        return system.completed(s) >= total

                    api0, client0 = cpu(api), cpu(client) if client else 0.0
                    with processes(system.worker(s, 1), s.env, logs[1]) as procs:
                        poll_until(done, procs, timeout, f"drain ({variant})", logs[1])
                        out["API CPU s"] = cpu(api) - api0
                        out["client CPU s"] = cpu(client) - client0 if client else 0.0
                        out["broker"]["drained"] = broker_counts(s)
                        out["API CPU s, all"] = out["API CPU s"]
                        out["client CPU s, all"] = out["client CPU s"]
                        if client is not None:
                            assert client.stdin
                            client.stdin.write(b"stop\n")
                            client.stdin.flush()
                            final = read_line(client, timeout, "stop")
                            out["API CPU s, all"] = cpu(api) - api0
                            out["streams"] = final["streams"]
                            out["client CPU s, all"] = final["cpu"] - client0
                            client.wait(30)
                        out["broker"]["after"] = broker_counts(s)
                        deadline = time.monotonic() + 5  # the metrics snapshot: every second
                        while hub_stats(port).get("events", 0) < 3 * total:
                            if time.monotonic() > deadline:
                                break
                            time.sleep(0.2)
                        out["hub after"] = hub_stats(port)
                finally:
                    if client is not None and client.poll() is None:
                        client.kill()
                        client.wait(10)
            out["jobs/s"] = (total - 1) / system.span(s)
            last = system._sql(s, "SELECT extract(epoch FROM max(finished_at)) FROM taskflow_jobs")
            seen = [x["last_succeeded"] for x in out.get("streams", []) if x["last_succeeded"]]
            out["lag s"] = max(seen) - float(last) if seen else None
        finally:
            out["log problems"] = log_problems(*logs)
    return out


# ------------------------------------------------------------------ report


def stream_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    streams = [x for sample in samples for x in sample.get("streams", [])]
    if not streams:
        return {}

    def minmed(key: str) -> str:
        values = [x[key] for x in streams]
        return f"{min(values):,} / {statistics.median(values):,.0f}"

    return {
        "events": minmed("events"),
        "succeeded": minmed("succeeded"),
        "dropped": sum(x["dropped_frames"] > 0 for x in streams),
        "dropped events": sum(x["dropped"] for x in streams),
        "early": sum(bool(x["early"]) for x in streams),
        "errors": sum(bool(x["error"]) for x in streams),
        "streams": len(streams),
        "MB": statistics.median(x["bytes"] for x in streams) / 1e6,
        "text MB": statistics.median(x.get("text_bytes", x["bytes"]) for x in streams) / 1e6,
    }


def report(samples: dict[str, list[dict[str, Any]]], labels: dict[str, str]) -> list[str]:
    def col(runs: list[dict[str, Any]], key: str) -> str:
        return fmt([x[key] for x in runs]) if runs and runs[0]["subscribers"] else "-"

    lines = [
        f"{'variant':<20}{'drain jobs/s':>22}{'vs 0 subs':>10}{'API CPU s':>18}"
        f"{'API CPU s, all':>18}{'client CPU s':>18}{'client CPU s, all':>18}"
    ]
    base = [x["jobs/s"] for x in samples.get("none", [])]
    verdicts = []
    for variant, runs in samples.items():
        if not runs:
            lines.append(f"{labels[variant]:<20}{'failed':>22}")
            continue
        rates = [x["jobs/s"] for x in runs]
        ratio = statistics.median(rates) / statistics.median(base) if base else None
        lines.append(
            f"{labels[variant]:<20}{fmt(rates):>22}{(f'{ratio:.2f}' if ratio else '-'):>10}"
            f"{fmt([x['API CPU s'] for x in runs]):>18}"
            f"{fmt([x['API CPU s, all'] for x in runs]):>18}"
            f"{col(runs, 'client CPU s'):>18}{col(runs, 'client CPU s, all'):>18}"
        )
        if variant != "none" and ratio is not None:
            verdicts.append(
                f"{labels[variant]}: ratio {ratio:.2f} "
                f"{'>=' if ratio >= 0.90 else '<'} 0.90: {'PASS' if ratio >= 0.90 else 'FAIL'}"
            )
    lines += ["", "target (at most 10 % slower with subscribers):", *("  " + v for v in verdicts)]
    lines += [
        "",
        "streams, over every sample: events / succeeded per stream (min / median)",
        f"{'variant':<20}{'streams':>9}{'events':>18}{'succeeded':>18}{'got dropped':>13}"
        f"{'events lost':>13}{'ended early':>13}{'errors':>8}{'lag s':>8}{'MB sent / text':>16}",
    ]
    for variant, runs in samples.items():
        summary = stream_summary(runs)
        if not summary:
            continue
        lags = [x["lag s"] for x in runs if x.get("lag s") is not None]
        mb = f"{summary['MB']:.2f} / {summary['text MB']:.2f}"
        lines.append(
            f"{labels[variant]:<20}{summary['streams']:>9}{summary['events']:>18}"
            f"{summary['succeeded']:>18}{summary['dropped']:>13}{summary['dropped events']:>13}"
            f"{summary['early']:>13}{summary['errors']:>8}"
            f"{(f'{max(lags):.2f}' if lags else '-'):>8}"
            f"{mb:>16}"
        )
    lines += ["", "broker, scratch vhost: queues / consumers / connections / channels"]
    lines.append(f"{'variant':<22}" + "".join(f"{p:>16}" for p in PHASES))
    for variant, runs in samples.items():
        cells = []
        for phase in PHASES:
            seen = sorted(
                {"/".join(str(x["broker"][phase][k]) for k in COUNTED) for x in runs}
                if all(phase in x["broker"] for x in runs)
                else set()
            )
            cells.append(",".join(seen) or "-")
        lines.append(f"{labels[variant]:<22}" + "".join(f"{c:>16}" for c in cells))
    lines += [
        "",
        "EventHub (GET /api/v1/metrics): listeners once subscribed; events, dropped at the end",
    ]
    for variant, runs in samples.items():
        hub = [
            f"{x['hub subscribed'].get('listeners')} listeners, "
            f"{x['hub after'].get('events')} events, {x['hub after'].get('dropped')} dropped"
            for x in runs
        ]
        lines.append(f"{labels[variant]:<22}  " + "; ".join(hub))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="none,all,deflate,page,job")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per wait")
    parser.add_argument(
        "--client-nice",
        default="10",
        help="niceness of the subscriber process (it stands for remote browsers: it takes "
        "the CPU the measured processes leave), or `idle` (SCHED_IDLE: only CPU time that "
        "nothing else wants)",
    )
    parser.add_argument("--out", help="write every sample as JSON here")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client)
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(variants) - set(VARIANTS) or "none" not in variants:
        parser.error(f"--variants: from {', '.join(VARIANTS)}, with none (the baseline)")
    n = args.subscribers
    labels = {
        "none": "0 subs",
        "all": f"{n} x /events",
        "deflate": f"{n} x /events, deflate",
        "page": f"{n} x jobs page",
        "job": f"{n} x /jobs/{{id}}",
    }
    samples: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    failures: list[str] = []
    started = time.monotonic()
    for rep in range(args.repeat):
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for variant in order:
            t0 = time.monotonic()
            try:
                result = measure(variant, args.jobs, n, args.timeout, args.client_nice)
            except Failed as exc:
                failures.append(f"{labels[variant]}: {exc}")
                print(f"[{rep + 1}/{args.repeat}] {labels[variant]}: FAILED {exc}", flush=True)
                continue
            samples[variant].append(result)
            print(
                f"[{rep + 1}/{args.repeat}] {labels[variant]}: {result['jobs/s']:,.0f} jobs/s,"
                f" API CPU {result['API CPU s']:.1f} s ({time.monotonic() - t0:.0f} s)",
                flush=True,
            )
    machine = (
        f"{platform.node()} {os.cpu_count()} cores, {platform.python_version()},"
        f" load {os.getloadavg()[0]:.2f}"
    )
    print()
    print(
        f"{args.jobs:,} queued no-op jobs, 1 worker, {n} subscribers, {args.repeat} repetitions"
        f" interleaved, subscriber process nice {args.client_nice}, {machine}"
    )
    print(f"median (min-max); per stream: min / median; {time.monotonic() - started:.0f} s in all")
    print("\n".join(report(samples, labels)))
    problems = sorted({p for runs in samples.values() for x in runs for p in x["log problems"]})
    if problems:
        print(
            f"\nlog lines at warning or above ({len(problems)}):\n  " + "\n  ".join(problems[:10])
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "jobs": args.jobs,
                    "subscribers": n,
                    "repeat": args.repeat,
                    "client_nice": args.client_nice,
                    "machine": machine,
                    "samples": samples,
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
