"""The service's pieces: user task modules, the demo tasks, the CLI's argument handling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskflow import JobStatus
from taskflow.__main__ import main as cli
from taskflow.demo import demo_registry
from taskflow.errors import ConfigError, DuplicateTask
from taskflow.main import load_registry
from taskflow.testing import embedded


def write_module(path: Path, name: str, body: str) -> None:
    (path / f"{name}.py").write_text(textwrap.dedent(body))


def test_user_task_modules_are_added_to_the_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_module(
        tmp_path,
        "tf_user_tasks",
        """
        from taskflow import TaskRegistry
        registry = TaskRegistry()

        @registry.task(name="greet")
        async def greet(payload, ctx):
            return f"hello {payload['name']}"
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry(["tf_user_tasks"])
    assert {"echo", "sleep", "fail", "cpu", "greet"} <= set(registry.names())


def test_a_task_name_clash_is_an_error_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_module(
        tmp_path,
        "tf_clashing_tasks",
        """
        from taskflow import TaskRegistry
        registry = TaskRegistry()

        @registry.task(name="echo")
        async def my_echo(payload, ctx):
            return None
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DuplicateTask, match="echo"):
        load_registry(["tf_clashing_tasks"])


def test_a_module_without_a_registry_or_missing_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_module(tmp_path, "tf_no_registry", "registry = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="no module-level"):
        load_registry(["tf_no_registry"])
    with pytest.raises(ConfigError, match="cannot import"):
        load_registry(["tf_does_not_exist_anywhere"])


@pytest.mark.anyio
async def test_the_demo_tasks_do_what_they_say() -> None:
    async with embedded(demo_registry(), concurrency=4) as tf:
        echo = await tf.submit("echo", {"x": [1, 2]})
        sleep = await tf.submit("sleep", {"seconds": 0.05, "steps": 5})
        flaky = await tf.submit("fail", {"times": 1}, max_attempts=3)
        always = await tf.submit("fail", {"message": "nope"}, max_attempts=1)
        cpu = await tf.submit("cpu", {"rounds": 1000, "seed": "s"})
        jobs = {
            name: await tf.wait(job_id, timeout=30)
            for name, job_id in [
                ("echo", echo),
                ("sleep", sleep),
                ("flaky", flaky),
                ("always", always),
                ("cpu", cpu),
            ]
        }
    assert jobs["echo"].result == {"x": [1, 2]}
    assert (jobs["sleep"].result, jobs["sleep"].progress) == ({"slept": 0.05}, 100.0)
    assert (jobs["flaky"].status, jobs["flaky"].attempts) == (JobStatus.COMPLETED, 2)
    assert jobs["flaky"].result == {"succeeded_on_attempt": 2}
    assert jobs["always"].status is JobStatus.FAILED
    assert jobs["always"].error is not None and "nope" in jobs["always"].error.message
    import hashlib

    digest = b"s"
    for _ in range(1000):
        digest = hashlib.sha256(digest).digest()
    assert jobs["cpu"].result == {"rounds": 1000, "digest": digest.hex()}


def test_the_cli_reports_bad_settings_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TASKFLOW_CONCURRENCY", "many")
    assert cli(["up"]) == 2
    err = capsys.readouterr().err
    assert "config_error" in err and "TASKFLOW_CONCURRENCY" in err


def test_the_cli_migrates_a_database(pg_url: str) -> None:
    env = {**os.environ, "TASKFLOW_DATABASE_URL": pg_url}  # a template clone: already migrated

    def taskflow(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "taskflow", *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    assert taskflow("migrate", "--list").split() == ["0001.jobs"]
    assert "0001.jobs" in taskflow("migrate", "--rollback", "1")
    assert taskflow("migrate", "--list").split() == []
    assert taskflow("migrate").strip() == "applied: 0001.jobs"
