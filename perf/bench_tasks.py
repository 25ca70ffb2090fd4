"""TaskFlow's side of the benchmark suite (`perf/suite.py`): the no-op and the 50 ms sleep,
loaded by `taskflow worker` through ``TASKFLOW_TASKS=bench_tasks``."""

from __future__ import annotations

from typing import Any

import anyio

from taskflow import JobContext, TaskRegistry

registry = TaskRegistry()


@registry.task(name="noop")
async def noop(payload: dict[str, Any], ctx: JobContext) -> None:
    return None


@registry.task(name="sleep50")
async def sleep50(payload: dict[str, Any], ctx: JobContext) -> None:
    await anyio.sleep(0.05)
