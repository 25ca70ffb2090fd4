"""What the store can keep: the values PostgreSQL refuses, found before they reach it.

PostgreSQL's ``text`` and ``jsonb`` refuse the NUL character (``\\u0000``) and lone UTF-16
surrogates; JSON has no NaN or Infinity; ``jsonb`` numbers and Python's own int-to-text
conversion stop at a few thousand digits. One such value in a group commit would fail every
submission of the group, so the edge (REST and the Python API alike) refuses it with the path
of the offending field, and the executor turns such a result into a terminal error.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from taskflow.limits import MAX_DEPTH, MAX_INT_BITS

_TOO_LARGE = "is an integer too large to store (at most about 4,200 digits)"


@dataclass(frozen=True, slots=True)
class Unstorable:
    """Where (a path such as ``payload.items[2].name``) and why a value cannot be stored."""

    where: str
    why: str


def text_problem(text: str) -> str | None:
    """Why PostgreSQL would refuse ``text``, or ``None``."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    if text.isascii():  # the common case: no surrogate possible, nothing to encode
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        return f"contains a lone surrogate (\\u{ord(bad):04x}), which is not valid Unicode"
    return None


def clean_text(text: str) -> str:
    """``text`` with what PostgreSQL refuses replaced by U+FFFD (for error and progress
    messages, which are ours to write: better readable than lost)."""
    if text_problem(text) is None:
        return text
    return "".join("\ufffd" if ch == "\x00" or "\ud800" <= ch <= "\udfff" else ch for ch in text)


def find_unstorable(value: Any, root: str = "payload") -> Unstorable | None:
    """The first part of a JSON value (dict with str keys, list/tuple, str, int, finite
    float, bool, None) that the store cannot keep, or ``None`` when all of it can."""
    for where, why in _problems(value, root):
        return Unstorable(where, why)
    return None


def find_unstorable_result(value: Any, root: str = "result") -> Unstorable | None:
    """Like ``find_unstorable`` for a task's result, which may hold anything the wire codec
    renders (datetimes, dataclasses, sets): what it renders is checked."""
    if value is None or isinstance(value, bool | float):  # the common cases, at no cost
        return None
    if type(value) is int:
        return None if value.bit_length() <= MAX_INT_BITS else Unstorable(root, _TOO_LARGE)
    try:
        encoded = msgspec.json.encode(value)
    except UnicodeEncodeError as exc:
        return Unstorable(root, f"contains a lone surrogate ({exc.reason})")
    except ValueError:  # Python's int-to-text limit
        return Unstorable(root, _TOO_LARGE)
    except (TypeError, msgspec.EncodeError, OverflowError):
        return None  # not serialisable at all: the caller's own error
    if b"\\u0000" not in encoded and not _has_big_int(value):
        return None
    return find_unstorable(msgspec.json.decode(encoded), root)


def _has_big_int(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and item.bit_length() > MAX_INT_BITS:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _problems(value: Any, root: str) -> Iterator[tuple[str, str]]:
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            yield where, f"is nested deeper than {MAX_DEPTH} levels"
            continue
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                yield where, problem
        elif isinstance(item, int):
            if item.bit_length() > MAX_INT_BITS:
                yield where, _TOO_LARGE
        elif isinstance(item, float):
            if not math.isfinite(item):
                yield where, f"is {item!r}, which is not a JSON number"
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                if not isinstance(key, str):
                    yield where, f"has a key of type {type(key).__name__}; JSON keys are strings"
                    continue
                problem = text_problem(key)
                if problem:
                    yield f"{where}[{key!r}]", f"is a key that {problem}"
                    continue
                children.append((child, _join(where, key), depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(
                (child, f"{where}[{i}]", depth + 1) for i, child in reversed(list(enumerate(item)))
            )
        else:
            yield where, f"is a {type(item).__name__}, not a JSON value"


def _join(where: str, key: str) -> str:
    if key.isidentifier():
        return f"{where}.{key}"
    return f"{where}[{key!r}]"
