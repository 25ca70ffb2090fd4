"""Where W1's `REST, batches of 100` goes: one keep-alive client POSTs batches of 100 no-op
jobs to a `taskflow api` (the suite's scratch vhost and database), after a warm-up of the
same size; it prints the rate and the CPU each process spent per job (the API, PostgreSQL's
backends, RabbitMQ), and with `--profile` the API's hottest functions (py-spy, inclusive
and self, share of the samples).

    python perf/profile_rest.py [--jobs 30000] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from suite import Failed, Http, scratch, taskflow_api  # noqa: E402


async def post_batches(port: int, jobs: int) -> float:
    """Jobs accepted per second: ``jobs / 100`` sequential POSTs of 100."""
    data = [{"payload": {}}] * 100
    async with Http(port) as http:
        start = time.perf_counter()
        for _ in range(jobs // 100):
            status, body = await http.call(
                "POST", "/api/v1/jobs", {"task_type": "noop", "data": data}
            )
            if status != 202:
                raise Failed(f"REST submit answered {status}: {body}")
        return (jobs // 100) * 100 / (time.perf_counter() - start)


def cpu_by_name(names: tuple[str, ...]) -> dict[str, float]:
    """CPU seconds (user + system) so far of every process with one of ``names``."""
    total = dict.fromkeys(names, 0.0)
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in names:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total[proc.info["name"]] += times.user + times.system
    return total


def top(raw: Path, n: int = 25) -> list[str]:
    """py-spy's raw stacks as the functions with the most samples, inclusive and self."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    out = [f"{samples} samples; inclusive:"]
    out += [f"  {c / samples:6.1%}  {f[:110]}" for f, c in inclusive.most_common(n)]
    out += ["self:"]
    out += [f"  {c / samples:6.1%}  {f[:110]}" for f, c in own.most_common(n)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--profile", action="store_true", help="py-spy on the API (250 Hz)")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with scratch(True) as s, taskflow_api(s) as port:
        (api,) = [
            p
            for p in psutil.Process().children(recursive=True)
            if p.cmdline()[-2:] == ["taskflow", "api"]
        ]
        anyio.run(post_batches, port, args.jobs, backend="asyncio")  # warm-up
        profiler, raw = None, Path(tempfile.mkdtemp()) / "api.raw"
        if args.profile:
            command = [spy, "record", "-r", "250", "-f", "raw", "-o", str(raw)]
            profiler = subprocess.Popen(
                [*command, "--pid", str(api.pid), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        others, api_before = cpu_by_name(("postgres", "beam.smp")), api.cpu_times()
        rate = anyio.run(post_batches, port, args.jobs, backend="asyncio")
        after, api_after = cpu_by_name(("postgres", "beam.smp")), api.cpu_times()
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait(timeout=30)
    api_cpu = api_after.user + api_after.system - api_before.user - api_before.system
    per_job = {
        "API": api_cpu,
        "PostgreSQL": after["postgres"] - others["postgres"],
        "RabbitMQ": after["beam.smp"] - others["beam.smp"],
    }
    print(f"{args.jobs:,} jobs in batches of 100, one keep-alive client: {rate:,.0f} jobs/s")
    print(
        "CPU per job, µs: "
        + ", ".join(f"{k} {v / args.jobs * 1e6:.0f}" for k, v in per_job.items())
    )
    if profiler is not None and raw.exists():
        print("\n".join(top(raw)))


if __name__ == "__main__":
    main()
