"""Contract of the LogStore port, run over every adapter (S3 on a moto server, real protocol)."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from taskflow import joblog
from taskflow.errors import LogStoreError
from taskflow.files import FileLogStore
from taskflow.memory import MemoryLogStore
from taskflow.ports.logs import LogStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # miniopy-async (aiohttp) needs asyncio


@pytest.fixture(params=["memory", "files", "s3"])
async def logs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogStore]:
    """One empty log store per test, for each adapter."""
    match request.param:
        case "memory":
            yield MemoryLogStore()
        case "files":
            yield FileLogStore(tmp_path / "logs")
        case "s3":
            from taskflow.s3 import open_s3_logs

            async with open_s3_logs(request.getfixturevalue("s3_url")) as store:
                yield store
        case other:
            raise AssertionError(f"no LogStore adapter named {other!r}")


def new_id() -> str:
    return str(uuid.uuid4())


def lines(attempt: int, *messages: str) -> bytes:
    return joblog.encode(
        joblog.record("info", attempt, m, source="task", ts=1_700_000_000.0) for m in messages
    )


async def test_appends_keep_their_order_across_attempts(logs: LogStore) -> None:
    job_id = new_id()
    await logs.append({job_id: lines(1, "one starts", "one fails")})
    await logs.append({job_id: lines(2, "two starts")})
    await logs.append({job_id: lines(2, "two succeeds")})
    data = await logs.read(job_id)
    assert data is not None
    assert [(r.attempt, r.message) for r in joblog.decode(data)] == [
        (1, "one starts"),
        (1, "one fails"),
        (2, "two starts"),
        (2, "two succeeds"),
    ]
    assert await logs.size(job_id) == len(data)


async def test_one_call_appends_to_many_jobs_without_mixing_them(logs: LogStore) -> None:
    a, b = new_id(), new_id()
    await logs.append({a: lines(1, "line of a"), b: lines(1, "line of b")})
    data_a, data_b = await logs.read(a), await logs.read(b)
    assert data_a is not None and data_b is not None
    assert [r.message for r in joblog.decode(data_a)] == ["line of a"]
    assert [r.message for r in joblog.decode(data_b)] == ["line of b"]


async def test_a_job_without_a_log_reads_none_and_sizes_zero(logs: LogStore) -> None:
    assert await logs.read(new_id()) is None
    assert await logs.size(new_id()) == 0


async def test_delete_removes_the_logs_of_the_given_jobs_only(logs: LogStore) -> None:
    doomed, kept = new_id(), new_id()
    await logs.append({doomed: lines(1, "bye"), kept: lines(1, "still here")})
    await logs.delete([doomed, new_id()])  # an id without a log is fine
    assert await logs.read(doomed) is None
    assert await logs.read(kept) == lines(1, "still here")
    await logs.delete([])


async def test_location_names_the_store(logs: LogStore) -> None:
    assert logs.location.split(":")[0] in {"memory", "file", "s3"}


async def test_an_s3_link_reads_the_log_directly(s3_url: str) -> None:
    from taskflow.s3 import open_s3_logs

    async with open_s3_logs(s3_url) as store:
        job_id = new_id()
        await store.append({job_id: lines(1, "via a presigned link")})
        url = await store.link(job_id)
    assert url is not None and "X-Amz-Signature" in url

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as response:
            return bytes(response.read())

    assert await anyio.to_thread.run_sync(fetch) == lines(1, "via a presigned link")


async def test_s3_down_is_a_log_store_error_not_a_hang() -> None:
    from taskflow.s3 import open_s3_logs

    async with open_s3_logs("http://k:s@127.0.0.1:9/nothing-listens", timeout=2.0) as store:
        with pytest.raises(LogStoreError):
            await store.append({new_id(): lines(1, "x")})
        with pytest.raises(LogStoreError):
            await store.read(new_id())
