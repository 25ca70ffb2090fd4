"""What the store cannot keep is found before it reaches the store, with the field's path."""

from __future__ import annotations

import dataclasses
import datetime
import math

import pytest

from taskflow.storable import (
    MAX_DEPTH,
    clean_text,
    find_unstorable,
    find_unstorable_result,
    text_problem,
)


@pytest.mark.parametrize(
    ("value", "where", "why"),
    [
        ({"s": "a\x00b"}, "payload.s", "NUL"),
        ({"a\x00": 1}, "payload['a\\x00']", "NUL"),
        ({"items": [{"ok": 1}, {"name": "x\x00"}]}, "payload.items[1].name", "NUL"),
        ({"s": "\ud800"}, "payload.s", "lone surrogate"),
        ({"s": "ok \udfff ok"}, "payload.s", "lone surrogate"),
        ({"n": math.nan}, "payload.n", "not a JSON number"),
        ({"n": -math.inf}, "payload.n", "not a JSON number"),
        ({"n": 10**5000}, "payload.n", "too large"),
        ({1: "int key"}, "payload", "key of type int"),
        ({"when": datetime.datetime(2026, 1, 1)}, "payload.when", "not a JSON value"),
        ({"b": b"bytes"}, "payload.b", "not a JSON value"),
        ({"with space": {"x": "\x00"}}, "payload['with space'].x", "NUL"),
    ],
)
def test_a_value_the_store_refuses_is_found_with_its_path(
    value: object, where: str, why: str
) -> None:
    found = find_unstorable(value)
    assert found is not None
    assert found.where == where
    assert why in found.why


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"s": "plain", "u": "snow ☃ and 😀", "n": 10**100, "f": 1.5e300, "b": True, "z": None},
        {"nested": [[1, 2], {"a": [None, "x"]}], "t": (1, 2)},
        {"escaped": "\\u0000 is six characters here"},
    ],
)
def test_json_values_are_storable(value: object) -> None:
    assert find_unstorable(value) is None


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    deep: object = "leaf"
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    found = find_unstorable({"d": deep})
    assert found is not None
    assert "nested deeper" in found.why


def test_text_problem_and_clean_text() -> None:
    assert text_problem("fine") is None
    assert text_problem("a\x00b") is not None
    assert text_problem("a\ud800b") is not None
    assert clean_text("a\x00b\ud800c") == "a\ufffdb\ufffdc"
    assert clean_text("unchanged ☃") == "unchanged ☃"


@dataclasses.dataclass
class Report:
    name: str


def test_a_result_is_checked_as_the_wire_codec_renders_it() -> None:
    assert find_unstorable_result({"at": datetime.datetime(2026, 1, 1), "s": {1, 2}}) is None
    found = find_unstorable_result({"report": Report(name="x\x00y")})
    assert found is not None and found.where == "result.report.name"
    assert find_unstorable_result("\ud800") is not None
    assert find_unstorable_result([10**5000]) is not None
    assert find_unstorable_result("a literal \\u0000, not a NUL") is None
