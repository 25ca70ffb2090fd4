"""The import-direction rule, enforced on the AST.

``web/`` and ``actors/`` import ``taskflow/``; ``taskflow/`` imports neither, except
``taskflow/main.py``, the composition root. The core and the actors stay backend-neutral:
they use AnyIO, never ``asyncio`` or ``trio`` directly.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOT = ROOT / "taskflow" / "main.py"
BACKENDS = frozenset({"asyncio", "trio"})
OUTER_LAYERS = frozenset({"actors", "web"})


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import statement, at any depth.

    Relative imports (``from . import x``) stay inside their own top-level package, so they
    can never reach another layer or a backend, and are skipped.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def violations(source: str, filename: str, forbidden: frozenset[str]) -> list[str]:
    """``filename:line: imports X`` for each import whose top-level package is forbidden."""
    found = [
        (line, f"{filename}:{line}: imports {target}")
        for line, target in imported_modules(ast.parse(source, filename=filename))
        if target.split(".")[0] in forbidden
    ]
    return [text for _, text in sorted(found)]


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def check(folder: str, forbidden: frozenset[str]) -> list[str]:
    found = []
    for path in python_files(folder):
        if path == COMPOSITION_ROOT:
            continue
        source = path.read_text(encoding="utf-8")
        found += violations(source, str(path.relative_to(ROOT)), forbidden)
    return found


def test_the_walk_sees_the_packages() -> None:
    taskflow_files = {str(p.relative_to(ROOT)) for p in python_files("taskflow")}
    assert {"taskflow/jobs.py", "taskflow/main.py", "taskflow/memory/store.py"} <= taskflow_files
    assert (ROOT / "actors" / "tree.py") in python_files("actors")


def test_taskflow_does_not_import_actors_or_web() -> None:
    found = check("taskflow", OUTER_LAYERS)
    assert not found, "taskflow/ must not import actors/ or web/:\n" + "\n".join(found)


@pytest.mark.parametrize("folder", ["taskflow", "actors"])
def test_core_and_actors_stay_backend_neutral(folder: str) -> None:
    found = check(folder, BACKENDS)
    assert not found, f"{folder}/ must use anyio, not asyncio/trio:\n" + "\n".join(found)


def test_composition_root_is_the_exception() -> None:
    # main.py wires the tree; if it stopped importing actors the exemption would be dead code.
    source = COMPOSITION_ROOT.read_text(encoding="utf-8")
    found = violations(source, "taskflow/main.py", OUTER_LAYERS)
    assert found


BAD_SOURCE = """\
import os
import actors
import web.app as app
from actors import tree
from actors.tree import open_tree
from web.routes import api
import json, asyncio.events


def later():
    import trio
    from trio.testing import MockClock
    from asyncio import sleep
"""


def test_walker_catches_every_import_form() -> None:
    found = violations(BAD_SOURCE, "taskflow/bad.py", OUTER_LAYERS | BACKENDS)
    assert found == [
        "taskflow/bad.py:2: imports actors",
        "taskflow/bad.py:3: imports web.app",
        "taskflow/bad.py:4: imports actors",
        "taskflow/bad.py:5: imports actors.tree",
        "taskflow/bad.py:6: imports web.routes",
        "taskflow/bad.py:7: imports asyncio.events",
        "taskflow/bad.py:11: imports trio",
        "taskflow/bad.py:12: imports trio.testing",
        "taskflow/bad.py:13: imports asyncio",
    ]


@pytest.mark.parametrize(
    "source",
    [
        "import actorsish\n",
        "from webhooks import send\n",
        "import anyio\nfrom anyio import sleep\n",
        "from taskflow import jobs\n",
        "from . import actors\n",  # a sibling module, not the actors package
        "from ..web import app\n",  # relative: stays inside its own package
        "# import asyncio\nx = 'import trio'\n",
    ],
)
def test_walker_ignores_lookalikes(source: str) -> None:
    assert violations(source, "x.py", OUTER_LAYERS | BACKENDS) == []
