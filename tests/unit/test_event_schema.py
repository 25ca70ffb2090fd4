"""The public event schema in docs/architecture.md is the code's: every kind, every field."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

from taskflow.messages import (
    ALL_MESSAGE_TYPES,
    AttemptFinished,
    CancelRequested,
    Event,
)
from taskflow.rabbitmq.events import kind_key

DOC = Path(__file__).parents[2] / "docs" / "architecture.md"
PUBLIC = [t for t in typing.get_args(Event) if t is not CancelRequested]


def documented() -> dict[str, list[str]]:
    """``{kind: [field, ...]}`` from the table of public events."""
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\| `(\w+)` \| ([^|]+) \|", line)
        if match:
            fields = re.sub(r"\([^)]*\)", "", match.group(2))
            rows[match.group(1)] = [f.strip() for f in fields.split(",")]
    return rows


def test_every_public_event_is_documented_with_exactly_its_fields() -> None:
    rows = documented()
    assert set(rows) == {kind_key(t) for t in PUBLIC}
    for kind in PUBLIC:
        fields = [f.name for f in dataclasses.fields(kind)]
        assert rows[kind_key(kind)] == fields, kind.__name__


def test_no_public_event_carries_a_delivery_tag_or_log_lines() -> None:
    for kind in typing.get_args(Event):
        names = {f.name for f in dataclasses.fields(kind)}
        assert not names & {"delivery_tag", "log_lines"}, kind.__name__


def test_the_internal_outcomes_are_not_events() -> None:
    internal = set(typing.get_args(AttemptFinished))
    assert internal and not internal & set(typing.get_args(Event))
    assert internal <= set(ALL_MESSAGE_TYPES)  # still encodable, for tests and tools
