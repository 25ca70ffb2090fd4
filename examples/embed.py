"""The README's embedding example, runnable: `python examples/embed.py` (asyncio) or
`python examples/embed.py trio`. tests/unit/test_examples.py runs it on both backends."""

from __future__ import annotations

import sys
from typing import Any

import anyio

from taskflow import JobContext, TaskRegistry
from taskflow.testing import embedded

registry = TaskRegistry()


@registry.task(name="flaky", max_attempts=3, timeout=5.0)
async def flaky(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    ctx.progress(50, "half way")
    if ctx.attempt < payload["succeed_on"]:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


@registry.task(name="add")
def add(payload: dict[str, Any], ctx: JobContext) -> int:  # a plain def runs in a thread
    return int(payload["a"]) + int(payload["b"])


async def main() -> None:
    async with embedded(registry, concurrency=8) as tf:
        job_id = await tf.submit("flaky", {"succeed_on": 2}, priority=5)
        job = await tf.wait(job_id, timeout=30)
        print(job.status, job.attempts, job.result)  # completed 2 {'attempt': 2}

        doomed = await tf.submit("flaky", {"succeed_on": 99})
        await tf.wait(doomed, timeout=30)
        print([j.id == doomed for j in tf.dead_letters()])  # [True]

        total = await tf.wait(await tf.submit("add", {"a": 2, "b": 3}), timeout=10)
        print(total.result)  # 5
        await tf.wait_idle()
        print(tf.metrics().totals.succeeded)  # 2


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
