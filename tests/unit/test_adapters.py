"""Each port's adapter is chosen from its URL's scheme; an unknown scheme is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskflow import adapters
from taskflow.config import Settings
from taskflow.errors import ConfigError
from taskflow.files import FileLogStore
from taskflow.main import open_resources
from taskflow.memory import MemoryJobStore, MemoryTransport

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("table", "url", "expected"),
    [
        (adapters.STORES, "postgresql://u@h/db", "_postgres"),
        (adapters.STORES, "POSTGRES://u@h/db", "_postgres"),
        (adapters.STORES, "memory://", "_memory_store"),
        (adapters.TRANSPORTS, "amqps://u@h/", "_rabbitmq"),
        (adapters.TRANSPORTS, "memory://", "_in_process"),
        (adapters.LOG_STORES, "file:///var/log/tf", "_file_logs"),
    ],
)
def test_the_scheme_picks_the_adapter(table: object, url: str, expected: str) -> None:
    assert adapters.opener(table, url, "X").__name__ == expected  # type: ignore[arg-type]


def test_an_unknown_scheme_names_the_setting_and_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"TASKFLOW_DATABASE_URL: no adapter for mysql://"):
        adapters.opener(adapters.STORES, "mysql://h/db", "TASKFLOW_DATABASE_URL")
    with pytest.raises(ConfigError, match=r"postgresql://, postgres://, memory://"):
        adapters.opener(adapters.STORES, "h/db", "TASKFLOW_DATABASE_URL")


async def test_memory_urls_open_a_process_of_in_memory_adapters(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="memory://", amqp_url="memory://")  # type: ignore[arg-type]
    async with open_resources(settings) as res:
        assert isinstance(res.store, MemoryJobStore) and res.queries is res.store
        assert isinstance(res.transport, MemoryTransport)
        assert isinstance(res.logs, FileLogStore)
