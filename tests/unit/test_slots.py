"""Slots: the executor capacity the dispatcher takes before it claims and the pool gives back."""

from __future__ import annotations

import anyio
import pytest

from actors.slots import Slots

pytestmark = pytest.mark.anyio


async def test_take_grants_what_is_free_and_waits_when_none_is() -> None:
    slots = Slots(capacity=3)
    assert await slots.take(2) == 2
    assert await slots.take(5) == 1  # only one left
    assert slots.used() == 3
    got: list[int] = []

    async def taker() -> None:
        got.append(await slots.take(4))

    async with anyio.create_task_group() as tg:
        tg.start_soon(taker)
        await anyio.wait_all_tasks_blocked()
        assert got == []  # none free: it waits
        slots.give(2)
    assert got == [2]
    assert slots.used() == 3


async def test_giving_back_more_than_taken_is_a_bug_caught_at_once() -> None:
    slots = Slots(capacity=2)
    await slots.take(1)
    with pytest.raises(RuntimeError, match="giving back 2 slots, 1 taken"):
        slots.give(2)
    slots.give(0)  # nothing: allowed
    slots.give(1)
    assert slots.used() == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Slots(capacity=0)
