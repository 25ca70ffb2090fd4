"""Rate limits per route group (``read``, ``submit``, ``admin``: the scope a route needs;
health has the read limit in buckets of its own),
keyed by API key, else by client address: quart-rate-limiter's ``RateLimiter`` with an
atomic store.

quart-rate-limiter decides with ``store.get``, a comparison and ``store.set`` awaited apart,
so concurrent requests all pass (20 of 20 against a limit of 5 with its RedisStore), and its
Redis keys never expire. Here each decision is one call, ``RateStore.acquire``: one Lua
script on Redis (``TASKFLOW_REDIS_URL``: the limit holds across every API process), or a
per-process GCRA (no Redis, or while it is down). Every limited response carries
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``; a refused one is a 429
``rate_limited`` envelope with ``Retry-After``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from flask.sansio.blueprints import Blueprint
from quart import Quart, Response, current_app, g, request
from quart_rate_limiter import RateLimit, RateLimiter
from quart_rate_limiter.store import MemoryStore

from taskflow.config import Settings, parse_rate
from taskflow.keys import Scope
from taskflow.redislink import Decision
from web.auth import OPEN, PAGE, current_caller, scope_of
from web.responses import ApiError

GROUPS = (Scope.READ, Scope.SUBMIT, Scope.ADMIN)


class RateStore(Protocol):
    backend: str

    async def acquire(self, key: str, count: int, period: float) -> Decision: ...


def group_limits(settings: Settings) -> dict[Scope, RateLimit]:
    """The limit of each group from ``TASKFLOW_RATE_LIMIT_*`` (a group left empty has none)."""
    out: dict[Scope, RateLimit] = {}
    for group in GROUPS:
        parsed = parse_rate(getattr(settings, f"rate_limit_{group.value}"))
        if parsed is not None:
            out[group] = RateLimit(parsed[0], timedelta(seconds=parsed[1]))
    return out


class GroupRateLimiter(RateLimiter):
    """``RateLimiter`` whose limits come from the route's group and whose decision is one
    atomic ``acquire``."""

    def __init__(self, app: Quart, *, limits: dict[Scope, RateLimit], store: RateStore) -> None:
        self.limits = limits
        self.rates = store
        super().__init__(None, key_function=_bucket, store=MemoryStore())
        self.init_app(app)

    def _get_limits_for_view_function(
        self, view_func: Callable[..., Any], blueprint: Blueprint | None
    ) -> list[RateLimit]:
        scope = scope_of(view_func, request.method)
        if scope == OPEN:  # health: the read limit, in buckets of its own (probes are not
            g.taskflow_rate_group = "health"  # clients and must not eat their budget)
            limit = self.limits.get(Scope.READ)
        else:
            if scope == PAGE:  # an HTML page reads
                scope = Scope.READ
            assert isinstance(scope, Scope)
            g.taskflow_rate_group = scope.value
            limit = self.limits.get(scope)
        return [limit] if limit is not None else []

    async def _raise_on_rejection(self, endpoint: str, rate_limits: list[RateLimit]) -> None:
        for rate_limit in rate_limits:
            group = g.get("taskflow_rate_group", "read")
            key = f"{group}:{rate_limit.key}:{await _bucket()}"
            decision = await self.rates.acquire(
                key, rate_limit.count, rate_limit.period.total_seconds()
            )
            g.taskflow_rate = decision
            if not decision.allowed:
                retry = max(1, math.ceil(decision.retry_after))
                raise ApiError(
                    429,
                    "rate_limited",
                    f"Too many {group} requests: the limit is {rate_limit.count} per "
                    f"{_period(rate_limit.period)} for this key; retry in {retry} s.",
                    details={
                        "group": group,
                        "limit": rate_limit.count,
                        "period_seconds": rate_limit.period.total_seconds(),
                        "retry_after": retry,
                    },
                    headers={"Retry-After": str(retry)},
                )

    async def _update_limits(self, endpoint: str, rate_limits: list[RateLimit]) -> None:
        """Nothing: ``acquire`` counted the request when it allowed it."""

    async def _after_request(self, response: Response) -> Response:
        decision = g.get("taskflow_rate")
        if isinstance(decision, Decision) and current_app.config["QUART_RATE_LIMITER_ENABLED"]:
            response.headers["RateLimit-Limit"] = str(decision.limit)
            response.headers["RateLimit-Remaining"] = str(decision.remaining)
            response.headers["RateLimit-Reset"] = str(math.ceil(decision.reset))
        return response

    async def _before_serving(self) -> None:
        """Nothing: the store is opened with the process's resources."""

    async def _after_serving(self) -> None:
        """Nothing: the store is closed with the process's resources."""


async def _bucket() -> str:
    return current_caller().bucket


def _period(period: timedelta) -> str:
    seconds = period.total_seconds()
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds == size:
            return name
    return f"{seconds:g} seconds"
