"""Fixtures for the web tests. Quart needs AnyIO's asyncio backend, so these run on asyncio only.

``runtime`` is the one place that knows the runtime is in memory; every test talks to it
through the ``Runtime`` API (or HTTP), so it can later be parametrized over PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from actors.runtime import Runtime, open_runtime
from actors.tree import TreeConfig
from taskflow import JobContext, RetryPolicy, TaskRegistry
from taskflow.config import Settings
from taskflow.main import local_resources
from taskflow.postgres import open_store
from taskflow.testing import embedded
from web.app import create_app

FAST = RetryPolicy(base=0.01, cap=0.02)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(name="echo", retry=FAST)
    async def echo(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        return payload

    @registry.task(name="sleep", max_attempts=1)
    async def sleep(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        seconds = float(payload.get("seconds", 0.1))
        steps = 10
        for step in range(steps):
            ctx.progress(100.0 * step / steps, f"step {step} of {steps}")
            await anyio.sleep(seconds / steps)
        return {"slept": seconds}

    @registry.task(name="fail", max_attempts=2, retry=FAST)
    async def fail(payload: dict[str, Any], ctx: JobContext) -> None:
        raise RuntimeError("this task always fails")

    @registry.task(name="chatty", max_attempts=2, retry=FAST)
    async def chatty(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        ctx.log.info("resizing", path=payload.get("path", "cat.png"), width=300)
        logging.getLogger("myapp.images").warning("slow disk: %s ms", 250)
        for i in range(int(payload.get("ticks", 0))):
            ctx.log.info("tick", i=i)
            await anyio.sleep(float(payload.get("every", 0.1)))
        if ctx.attempt < int(payload.get("fail_until", 0)):
            raise ValueError(f"not yet (attempt {ctx.attempt})")
        return {"ok": True}

    @registry.task(name="chatty_sync")
    def chatty_sync(payload: dict[str, Any], ctx: JobContext) -> int:
        ctx.log.info("in a thread")
        logging.getLogger("myapp.sync").error("from stdlib in a thread")
        return 1

    @registry.task(name="verbose")
    async def verbose(payload: dict[str, Any], ctx: JobContext) -> None:
        for i in range(int(payload["lines"])):
            ctx.log.info("line", i=i, filler="x" * 100)

    @registry.task(name="picky", max_attempts=1)
    async def picky(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        if payload.get("size", 0) <= 0:
            raise ValueError(f"size must be positive, got {payload.get('size')}")
        return payload

    return registry


@pytest.fixture
def settings() -> Settings:
    # No rate limits here: these tests send bursts; tests/web/test_rate_limits.py sets them.
    return Settings(
        queues=("default", "other"),
        max_batch=50,
        max_body_bytes=64 * 1024,
        rate_limit_submit="",
        rate_limit_read="",
        rate_limit_admin="",
    )


@pytest.fixture(params=["memory", "postgres"])
async def runtime(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Runtime]:
    """The runtime behind the app: in memory, and on PostgreSQL (a fresh migrated database)."""
    if request.param == "memory":
        async with embedded(
            make_registry(),
            concurrency=4,
            queues=settings.queues,
            shutdown_grace=0.5,
            promote_interval=0.05,
        ) as tf:
            yield tf
        return
    async with open_store(request.getfixturevalue("pg_url")) as store:
        resources = local_resources(store)
        config = TreeConfig(
            concurrency=4, queues=settings.queues, shutdown_grace=0.5, promote_interval=0.05
        )
        async with open_runtime(make_registry(), resources, config) as rt:
            yield rt


@pytest.fixture
def app(runtime: Runtime, settings: Settings) -> Quart:
    return create_app(runtime, settings)


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()
