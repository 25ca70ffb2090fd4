"""Waiting for a condition the code under test exposes no event for."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every millisecond; ``TimeoutError`` after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but the state itself
            await anyio.sleep(0.001)
