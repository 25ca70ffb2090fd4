"""Built-in demo tasks, always registered: echo, sleep, fail, cpu."""

from __future__ import annotations

import hashlib
from typing import Any

import anyio

from taskflow.context import JobContext
from taskflow.registry import TaskRegistry

MAX_SLEEP = 3600.0
MAX_CPU_ROUNDS = 5_000_000


def demo_registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(name="echo", timeout=30.0)
    async def echo(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Return the payload."""
        return payload

    @registry.task(name="sleep", timeout=MAX_SLEEP + 60.0)
    async def sleep(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Simulated work: ``seconds`` (default 1, at most 1 h) in ``steps`` with progress."""
        seconds = min(MAX_SLEEP, max(0.0, float(payload.get("seconds", 1.0))))
        steps = max(1, min(100, int(payload.get("steps", 5))))
        for step in range(1, steps + 1):
            await anyio.sleep(seconds / steps)
            ctx.progress(100.0 * step / steps, f"step {step} of {steps}")
        ctx.log.info("slept", seconds=seconds)
        return {"slept": seconds}

    @registry.task(name="fail", max_attempts=3)
    async def fail(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Fail the first ``times`` attempts (default: always), then succeed."""
        times = payload.get("times")
        if times is None or ctx.attempt <= int(times):
            raise RuntimeError(
                f"{payload.get('message', 'failing on purpose')} (attempt {ctx.attempt})"
            )
        return {"succeeded_on_attempt": ctx.attempt}

    @registry.task(name="cpu", timeout=120.0)
    def cpu(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """A bounded CPU-bound computation (sync, so it runs in a worker thread): ``rounds``
        chained SHA-256 hashes (default 100,000, at most 5,000,000)."""
        rounds = max(1, min(MAX_CPU_ROUNDS, int(payload.get("rounds", 100_000))))
        digest = str(payload.get("seed", "taskflow")).encode()
        for i in range(rounds):
            digest = hashlib.sha256(digest).digest()
            if i % 50_000 == 0:
                if ctx.cancelled:
                    raise RuntimeError("cancelled")
                ctx.progress(100.0 * i / rounds)
        return {"rounds": rounds, "digest": digest.hex()}

    return registry
