"""Rate limits per route group, keyed by API key or client address: the 429 envelope and the
RateLimit-* headers, per-process and on Redis (atomic: concurrent requests never overshoot),
trusted proxies, and the fallback while Redis is unreachable."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anyio
import pytest
from quart import Quart
from structlog.testing import capture_logs
from werkzeug.datastructures import Headers

from actors.runtime import Runtime
from taskflow.config import Settings, networks
from taskflow.redislink import MemoryRateStore, RedisLink, RedisRateStore, gcra
from tests.web.helpers import assert_error
from web.app import create_app
from web.auth import client_address

pytestmark = pytest.mark.anyio


def limited(settings: Settings, **limits: str) -> Settings:
    return dataclasses.replace(
        settings,
        rate_limit_read=limits.get("read", ""),
        rate_limit_submit=limits.get("submit", ""),
        rate_limit_admin=limits.get("admin", ""),
    )


async def test_the_limit_answers_429_with_the_envelope_and_headers(
    runtime: Runtime, settings: Settings
) -> None:
    client = create_app(runtime, limited(settings, read="3/minute")).test_client()
    seen = []
    for _ in range(3):
        response = await client.get("/api/v1/jobs")
        assert response.status_code == 200
        seen.append(int(response.headers["RateLimit-Remaining"]))
        assert response.headers["RateLimit-Limit"] == "3"
    assert seen == [2, 1, 0]
    response = await client.get("/api/v1/jobs")
    body = await assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 20
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) >= int(response.headers["Retry-After"])
    assert body["error"]["details"]["group"] == "read"
    # another group has its own limit (none here)
    assert (
        await client.post("/api/v1/jobs", json={"task_type": "echo", "data": [{"payload": {}}]})
    ).status_code == 202


async def test_a_batch_counts_once(runtime: Runtime, settings: Settings) -> None:
    client = create_app(runtime, limited(settings, submit="2/minute")).test_client()
    body = {"task_type": "echo", "data": [{"payload": {"i": i}} for i in range(10)]}
    assert (await client.post("/api/v1/jobs", json=body)).status_code == 202
    assert (await client.post("/api/v1/jobs", json=body)).status_code == 202
    await assert_error(await client.post("/api/v1/jobs", json=body), 429, "rate_limited")


async def test_each_group_has_its_own_limit(runtime: Runtime, settings: Settings) -> None:
    client = create_app(
        runtime, limited(settings, read="2/minute", submit="1/minute")
    ).test_client()
    body = {"task_type": "echo", "data": [{"payload": {}}]}
    assert (await client.post("/api/v1/jobs", json=body)).status_code == 202
    await assert_error(await client.post("/api/v1/jobs", json=body), 429, "rate_limited")
    assert (await client.get("/api/v1/jobs")).status_code == 200
    assert (await client.get("/api/v1/metrics")).status_code == 200
    await assert_error(await client.get("/api/v1/jobs"), 429, "rate_limited")


async def test_limits_are_per_key(runtime: Runtime, settings: Settings) -> None:
    settings = dataclasses.replace(limited(settings, read="2/minute"), auth="required")
    client = create_app(runtime, settings).test_client()
    keys = []
    for name in ("a", "b"):
        _, secret = await runtime.create_key(name, ["read"])
        keys.append({"Authorization": f"Bearer {secret}"})
    for _ in range(2):
        assert (await client.get("/api/v1/jobs", headers=keys[0])).status_code == 200
    await assert_error(await client.get("/api/v1/jobs", headers=keys[0]), 429, "rate_limited")
    assert (await client.get("/api/v1/jobs", headers=keys[1])).status_code == 200
    # a flood of bad keys is limited by address, before the 401
    for _ in range(2):
        await assert_error(
            await client.get("/api/v1/jobs", headers={"Authorization": "Bearer bad"}),
            401,
            "unauthorized",
        )
    await assert_error(
        await client.get("/api/v1/jobs", headers={"Authorization": "Bearer bad"}),
        429,
        "rate_limited",
    )


async def test_concurrent_requests_never_overshoot(runtime: Runtime, settings: Settings) -> None:
    app: Quart = create_app(runtime, limited(settings, read="5/minute"))
    client = app.test_client()
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await client.get("/api/v1/jobs")).status_code)

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(one)
    assert sorted(statuses) == [200] * 5 + [429] * 25


def test_forwarded_for_counts_only_from_trusted_proxies() -> None:
    trusted = networks(("10.0.0.0/8",))
    headers = Headers([("X-Forwarded-For", "203.0.113.9, 10.1.1.1")])
    assert client_address("10.0.0.2", headers, trusted) == "203.0.113.9"
    assert client_address("198.51.100.7", headers, trusted) == "198.51.100.7"  # not a proxy
    assert client_address("10.0.0.2", headers, ()) == "10.0.0.2"  # no proxy trusted
    spoofed = Headers([("X-Forwarded-For", "1.2.3.4, 203.0.113.9")])
    assert client_address("10.0.0.2", spoofed, trusted) == "203.0.113.9"  # the nearest hop
    assert client_address("10.0.0.2", Headers(), trusted) == "10.0.0.2"
    assert client_address("10.0.0.2", Headers([("X-Forwarded-For", "junk")]), trusted) == "10.0.0.2"


async def test_proxied_clients_get_their_own_buckets(runtime: Runtime, settings: Settings) -> None:
    settings = dataclasses.replace(
        limited(settings, read="1/minute"), trusted_proxies=("127.0.0.0/8",)
    )
    client = create_app(runtime, settings).test_client()
    proxy = {"client": ("127.0.0.1", 40000)}

    async def get(ip: str) -> int:
        response = await client.get(
            "/api/v1/jobs", headers={"X-Forwarded-For": ip}, scope_base=proxy
        )
        return response.status_code

    assert [await get("203.0.113.1"), await get("203.0.113.2")] == [200, 200]
    assert await get("203.0.113.1") == 429


def test_gcra_spreads_a_limit_over_its_period() -> None:
    tat, allowed = 0.0, 0
    for _ in range(10):
        decision, tat = gcra(tat, 100.0, 4, 60.0)
        allowed += decision.allowed
    assert allowed == 4
    decision, _ = gcra(tat, 115.0, 4, 60.0)  # one emission interval (15 s) later: one more
    assert decision.allowed and decision.remaining == 0


@pytest.fixture
async def link(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisLink]:
    link = RedisLink(redis_url, prefix=redis_prefix + ":")
    yield link
    keys = await link.client.keys(redis_prefix + ":*")
    if keys:
        await link.client.delete(*keys)
    await link.aclose()


async def test_the_redis_store_is_atomic_and_expires_its_keys(link: RedisLink) -> None:
    store = RedisRateStore(link)
    decisions = []

    async def one() -> None:
        decisions.append(await store.acquire("burst", 10, 2.0))

    async with anyio.create_task_group() as tg:
        for _ in range(60):
            tg.start_soon(one)
    assert sum(d.allowed for d in decisions) == 10
    ttl = await link.client.pttl(link.prefix + "rl:burst")
    assert 0 < ttl <= 2000  # gone once the bucket is full again: no key kept forever
    refused = [d for d in decisions if not d.allowed]
    assert all(0 < d.retry_after <= 0.2 + 1e-6 for d in refused)


async def test_redis_down_falls_back_per_process_and_warns_once(redis_prefix: str) -> None:
    link = RedisLink("redis://127.0.0.1:1/0", prefix=redis_prefix + ":")  # nothing listens
    store = RedisRateStore(link, MemoryRateStore())
    with capture_logs() as logs:
        decisions = [await store.acquire("k", 3, 60.0) for _ in range(5)]
        link._down_until = 0.0  # the breaker reopens: a second failure within the minute
        await store.acquire("k", 3, 60.0)
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    warnings = [e for e in logs if e["event"] == "redis_unavailable"]
    assert len(warnings) == 1 and "fallback" in warnings[0]
    await link.aclose()


async def test_the_app_limits_through_redis(
    runtime: Runtime, settings: Settings, link: RedisLink
) -> None:
    from taskflow.resources import Resources

    resources: Resources = runtime.resources
    shared = dataclasses.replace(resources, redis=link)
    runtime.resources = shared
    try:
        apps = [create_app(runtime, limited(settings, read="4/minute")) for _ in range(2)]
        statuses = [
            (await apps[i % 2].test_client().get("/api/v1/jobs")).status_code for i in range(8)
        ]
    finally:
        runtime.resources = resources
    assert statuses.count(200) == 4  # one limit for both apps, as for two API processes
