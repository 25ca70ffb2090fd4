"""The README's example must stay true: run it on both backends and check what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_embedding_example_runs(backend: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embed.py"), backend],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    assert out == ["completed 2 {'attempt': 2}", "[True]", "5", "2"]


def test_readme_shows_the_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "embed.py").read_text()
    start = example.index("registry = TaskRegistry()")
    end = example.index('\n\nif __name__ == "__main__":')
    assert example[start:end] in readme
