"""persist waits out outages and shows who is stuck; a refused value is never retried."""

from __future__ import annotations

import anyio
import pytest

from actors.persist import Retrying, persist
from taskflow.errors import NotStorable, StoreError

pytestmark = pytest.mark.anyio


async def test_a_call_that_keeps_failing_is_listed_while_it_retries() -> None:
    retrying = Retrying()
    calls = 0
    seen: list[list[str]] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        seen.append([c.call for c in retrying.stuck()])
        if calls < 4:
            raise StoreError("database down")
        return "ok"

    assert await persist("settle", flaky, retrying=retrying, base=0.001, cap=0.002) == "ok"
    assert seen[0] == [] and seen[1] == [] and seen[3] == ["settle"]  # after two failures
    assert retrying.stuck() == []  # done: no longer listed


async def test_a_refused_value_is_raised_at_once_never_retried() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise NotStorable("NUL in a result")

    with anyio.fail_after(1), pytest.raises(NotStorable):
        await persist("settle", refused, base=10.0)
    assert calls == 1
