"""Contract of the LogStore port, run over every adapter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskflow.files import FileLogStore
from taskflow.memory import MemoryLogStore
from taskflow.ports.logs import LogStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "files"])
async def logs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogStore]:
    """One log store per test, for each adapter.

    Later adapters plug in here: add their name to ``params`` and a ``case`` that opens the
    adapter and closes it after the ``yield`` (e.g. ``"s3"``: ``S3LogStore`` on a fresh
    bucket or prefix, calling ``require_service`` from tests/conftest.py when S3 is not
    reachable).
    """
    match request.param:
        case "memory":
            yield MemoryLogStore()
        case "files":
            yield FileLogStore(tmp_path / "logs")
        case other:
            raise AssertionError(f"no LogStore adapter named {other!r}")


def new_id() -> str:
    return str(uuid.uuid4())


def positions(text: str, lines: list[str]) -> list[int]:
    """Where each of ``lines`` stands among the lines of ``text`` (each must be there whole)."""
    all_lines = text.splitlines()
    return [all_lines.index(line) for line in lines]


async def test_the_log_holds_every_attempt_in_order(logs: LogStore) -> None:
    job_id = new_id()
    first = ["attempt one starts", "attempt one fails"]
    second = ["attempt two starts", "attempt two succeeds"]

    await logs.append(job_id, 1, first)
    await logs.append(job_id, 2, second)
    text = await logs.read(job_id)

    assert text is not None
    where = positions(text, first + second)
    assert where == sorted(where)
    assert len(set(where)) == 4


async def test_logs_of_different_jobs_do_not_mix(logs: LogStore) -> None:
    a, b = new_id(), new_id()
    await logs.append(a, 1, ["line of a"])
    await logs.append(b, 1, ["line of b"])

    text_a, text_b = await logs.read(a), await logs.read(b)

    assert text_a is not None
    assert text_b is not None
    assert "line of a" in text_a.splitlines()
    assert "line of b" not in text_a.splitlines()
    assert "line of b" in text_b.splitlines()
    assert "line of a" not in text_b.splitlines()


async def test_reading_a_job_without_a_log_is_none(logs: LogStore) -> None:
    assert await logs.read(new_id()) is None


async def test_delete_removes_the_logs_of_the_given_jobs_only(logs: LogStore) -> None:
    doomed, kept = new_id(), new_id()
    await logs.append(doomed, 1, ["bye"])
    await logs.append(doomed, 2, ["bye again"])
    await logs.append(kept, 1, ["still here"])

    await logs.delete([doomed, new_id()])  # an id without a log is fine

    assert await logs.read(doomed) is None
    kept_text = await logs.read(kept)
    assert kept_text is not None
    assert "still here" in kept_text.splitlines()
    await logs.delete([])
