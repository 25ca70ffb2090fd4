"""The import-direction rule, enforced on the AST.

``web/`` and ``actors/`` import ``taskflow/``; ``taskflow/`` imports neither, except the two
roots named in ``ROOTS``: the CLI and the composition root. No cycle runs between the
packages ``taskflow/``, ``actors/`` and ``web/``, counting imports inside functions and
``importlib.import_module("literal")`` calls. The core and the actors stay backend-neutral:
they use AnyIO, never ``asyncio`` or ``trio`` directly.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOT = ROOT / "taskflow" / "main.py"
ROOTS = frozenset({COMPOSITION_ROOT, ROOT / "taskflow" / "__main__.py"})
"""The modules of ``taskflow/`` allowed to import ``actors/`` and ``web/``."""
PACKAGES = ("taskflow", "actors", "web")
BACKENDS = frozenset({"asyncio", "trio"})
OUTER_LAYERS = frozenset({"actors", "web"})


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import statement, at any depth, and every
    ``importlib.import_module("literal")`` call.

    Relative imports (``from . import x``) stay inside their own top-level package, so they
    can never reach another layer or a backend, and are skipped.
    """
    for node in ast.walk(tree):
        for target in (
            node_imports(node)[:1] if isinstance(node, ast.ImportFrom) else node_imports(node)
        ):
            yield getattr(node, "lineno", 0), target


def node_imports(node: ast.AST) -> list[str]:
    """What one node imports; for ``from a import b``: ``a`` first, then ``a.b`` (which may
    be a module or a name)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    if (
        isinstance(node, ast.Call)
        and _is_import_module(node.func)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def _is_import_module(func: ast.expr) -> bool:
    """``importlib.import_module`` or a bare ``import_module``."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id == "import_module"


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


def check(folder: str, forbidden: frozenset[str], *, exempt: frozenset[Path] = ROOTS) -> list[str]:
    found = []
    for path in python_files(folder):
        if path in exempt:
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
    found = check(folder, BACKENDS, exempt=frozenset())
    assert not found, f"{folder}/ must use anyio, not asyncio/trio:\n" + "\n".join(found)


@pytest.mark.parametrize("root", sorted(ROOTS), ids=lambda p: p.name)
def test_each_root_is_a_real_exception(root: Path) -> None:
    # A root that stopped importing actors/ or web/ would be a dead exemption.
    source = root.read_text(encoding="utf-8")
    assert violations(source, str(root.relative_to(ROOT)), OUTER_LAYERS)


# ------------------------------------------------------------------ cycles


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(base: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``PACKAGES`` it imports (at any depth, importlib included).
    ``from a.b import c`` counts as an import of ``a.b.c`` when that is a module, else ``a.b``."""
    files = [p for pkg in PACKAGES for p in sorted((base / pkg).rglob("*.py"))]
    modules = {module_name(p, base): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            found = node_imports(node)
            if isinstance(node, ast.ImportFrom):  # the submodules named, else the module
                found = [m for m in found[1:] if m in modules] or found[:1]
            targets |= {m for m in found if m in modules and m != name}
        graph[name] = targets
    return graph


def cross_package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan) holding modules of more than one package."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len({m.split(".")[0] for m in component}) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_runs_between_taskflow_actors_and_web() -> None:
    cycles = cross_package_cycles(import_graph(ROOT))
    assert not cycles, "import cycles across packages:\n" + "\n".join(map(str, cycles))


def test_a_cycle_through_a_lazy_import_or_importlib_is_found(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "taskflow" / "main.py").write_text("from web.app import create\n")
    (tmp_path / "web" / "app.py").write_text("def create():\n    from actors import runtime\n")
    (tmp_path / "actors" / "runtime.py").write_text(
        "import importlib\nimportlib.import_module('taskflow.main')\n"
    )
    (tmp_path / "actors" / "tree.py").write_text("from taskflow import jobs\n")
    (tmp_path / "taskflow" / "jobs.py").write_text("")
    cycles = cross_package_cycles(import_graph(tmp_path))
    assert cycles == [["actors.runtime", "taskflow.main", "web.app"]]
    (tmp_path / "actors" / "runtime.py").write_text("from taskflow import jobs\n")
    assert cross_package_cycles(import_graph(tmp_path)) == []


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
