"""Redis for the tests: the machine's (``TASKFLOW_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``), skipped locally when absent, required under CI. Each test gets
a key prefix of its own (``TASKFLOW_AMQP_PREFIX`` names a cluster's keys in Redis)."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

from tests.conftest import require_service

DEFAULT = "redis://127.0.0.1:6379/0"


def redis_url_or_skip() -> str:
    url = os.environ.get("TASKFLOW_TEST_REDIS_URL", DEFAULT)
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2).close()
    except OSError as exc:
        require_service("Redis", f"{url}: {exc}")
    return url


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


@pytest.fixture
def redis_prefix() -> str:
    return f"tft{uuid.uuid4().hex[:10]}"
