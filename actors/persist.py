"""Retrying infrastructure calls: an unavailable store or transport never fails a job.

Actors call the store and the transport through ``persist``: a ``StoreError`` or
``TransportError`` is logged and retried with capped exponential backoff until it succeeds,
while the work waits (backpressure). Cancellation is never retried or swallowed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from taskflow.errors import StoreError, TransportError
from taskflow.log import get_logger

T = TypeVar("T")
log = get_logger("taskflow.persist")


async def persist(
    what: str, call: Callable[[], Awaitable[T]], *, base: float = 0.1, cap: float = 5.0
) -> T:
    delay = base
    while True:
        try:
            return await call()
        except (StoreError, TransportError) as exc:
            log.warning("dependency_unavailable", call=what, error=exc.message, retry_in=delay)
            await anyio.sleep(delay)
            delay = min(cap, delay * 2)
