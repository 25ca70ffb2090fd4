"""Named SQL sections: ``-- name: <name>`` headers in a ``.sql`` file, loaded once; a section
may include another with ``/*include:<name>*/``."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"/\*include:(\w+)\*/")


def parse(text: str) -> dict[str, str]:
    """The statements of ``text`` by name; comments before the first header are ignored."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} defined twice")
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    # ``/*include:NAME*/`` stands for the section NAME (a shared WHERE clause, say).
    return {name: _INCLUDE.sub(lambda m: queries[m.group(1)], sql) for name, sql in queries.items()}


@cache
def queries() -> dict[str, str]:
    return parse((Path(__file__).with_name("queries.sql")).read_text())
