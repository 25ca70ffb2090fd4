"""RabbitMQ for tests: the broker at TASKFLOW_TEST_AMQP_URL (default the local one).

Tests isolate themselves in one of two ways:
- a unique prefix (``t<hex8>``), with every queue and exchange of the prefix deleted after the
  test (``open_test_transport``, ``open_test_event_bus``, the ``rabbit_prefix`` fixture);
- a vhost of their own (``rabbit_vhost``), made and removed with ``rabbitmqctl``, for tests
  that close every connection of their vhost, refuse new ones or set policies, without
  touching anyone else's connections on the shared broker.

A missing broker skips these tests locally and fails them under CI (``require_service``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiormq
import anyio
import pytest

from taskflow.rabbitmq import (
    RabbitMQEventBus,
    RabbitMQTransport,
    open_rabbitmq_event_bus,
    open_rabbitmq_transport,
)
from tests.conftest import require_service

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def amqp_url() -> str:
    return os.environ.get("TASKFLOW_TEST_AMQP_URL", DEFAULT_URL)


def unreachable(url: str) -> str | None:
    """Why the broker at ``url`` cannot be reached, or None."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"


def require_rabbitmq(url: str | None = None) -> str:
    url = url or amqp_url()
    reason = unreachable(url)
    if reason is not None:
        require_service("RabbitMQ", reason)
    return url


def fresh_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def with_vhost(url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


def vhost_of(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


# ------------------------------------------------------------------ cleanup


async def delete_topology(
    url: str, *, queues: Iterable[str] = (), exchanges: Iterable[str] = ()
) -> None:
    """Delete queues and exchanges by name (missing ones are fine)."""
    with anyio.fail_after(10):
        async with aiormq.connect(url) as connection:
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            for exchange in exchanges:
                await channel.exchange_delete(exchange)


async def delete_transport_topology(url: str, transport: RabbitMQTransport) -> None:
    topology = transport.topology
    await delete_topology(
        url,
        queues=[topology.queue(q) for q in transport.queues] + [topology.dead_queue],
        exchanges=[topology.jobs_exchange, topology.dead_letter_exchange],
    )


@asynccontextmanager
async def open_test_transport(
    url: str | None = None, *, cleanup: bool = True, **options: Any
) -> AsyncIterator[RabbitMQTransport]:
    """A transport under a fresh prefix (unless given), its topology deleted afterwards
    (``cleanup=False`` in a vhost of the test's own: the vhost goes with everything in it)."""
    url = require_rabbitmq(url)
    options.setdefault("prefix", fresh_prefix())
    transport: RabbitMQTransport | None = None
    try:
        async with open_rabbitmq_transport(url, connect_timeout=5, **options) as transport:
            yield transport
    finally:
        if transport is not None and cleanup:
            await delete_transport_topology(url, transport)


@asynccontextmanager
async def open_test_event_bus(
    url: str | None = None, *, prefix: str | None = None, cleanup: bool = True, **options: Any
) -> AsyncIterator[RabbitMQEventBus]:
    """An event bus under a fresh prefix (unless given), its exchange deleted afterwards."""
    url = require_rabbitmq(url)
    prefix = prefix or fresh_prefix()
    try:
        async with open_rabbitmq_event_bus(url, prefix=prefix, connect_timeout=5, **options) as bus:
            yield bus
    finally:
        if cleanup:
            await delete_topology(url, exchanges=[f"{prefix}.events"])


# ------------------------------------------------------------------ rabbitmqctl


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS`` against the local node (the test broker must be local)."""
    completed = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return completed.stdout


async def arabbitmqctl(*args: str) -> str:
    completed = await anyio.run_process(["rabbitmqctl", "-q", *args], check=True)
    return completed.stdout.decode()


def require_rabbitmqctl(url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        require_service("rabbitmqctl", "not on PATH; the test manages vhosts with it")
    if (urlsplit(url).hostname or "") not in LOCAL_HOSTS:
        require_service("rabbitmqctl", f"the test broker {url!r} is not the local node")


@dataclass(frozen=True, slots=True)
class Vhost:
    """A vhost of the test's own, and what a test may do to it alone."""

    name: str
    url: str
    user: str

    async def close_connections(self, reason: str = "closed by test") -> None:
        await arabbitmqctl("close_all_connections", "--vhost", self.name, reason)

    async def deny(self) -> None:
        """New connections to the vhost are refused (existing ones are not closed)."""
        await arabbitmqctl("clear_permissions", "-p", self.name, self.user)

    async def allow(self) -> None:
        await arabbitmqctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    async def set_policy(self, name: str, pattern: str, definition: str) -> None:
        await arabbitmqctl(
            "set_policy", "-p", self.name, "--apply-to", "queues", name, pattern, definition
        )


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    """The broker's URL; skips (fails under CI) when it is unreachable."""
    return require_rabbitmq()


@pytest.fixture
def rabbit_prefix() -> str:
    return fresh_prefix()


@pytest.fixture
def rabbit_vhost(rabbit_url: str) -> Iterator[Vhost]:
    """A fresh vhost on the local broker, deleted (with everything in it) after the test."""
    require_rabbitmqctl(rabbit_url)
    name = f"taskflow-test-{uuid.uuid4().hex[:12]}"
    user = unquote(urlsplit(rabbit_url).username or "guest")
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield Vhost(name=name, url=with_vhost(rabbit_url, name), user=user)
    finally:
        rabbitmqctl("delete_vhost", name)
