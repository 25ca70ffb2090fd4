"""The service's pieces: user task modules, the demo tasks, the CLI's argument handling."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskflow import JobStatus
from taskflow.__main__ import main as cli
from taskflow.config import Settings
from taskflow.demo import demo_registry
from taskflow.errors import ConfigError, DuplicateTask
from taskflow.main import check_exposure, load_registry
from taskflow.testing import embedded
from tests.e2e.service import free_port


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
    registry = load_registry(["tf_user_tasks"], demo=True)
    assert {"echo", "sleep", "fail", "cpu", "greet"} <= set(registry.names())
    # Without the demo switch (api and worker by default) only the user's tasks are there
    assert set(load_registry(["tf_user_tasks"]).names()) == {"greet"}


def test_a_user_task_may_take_a_demo_name_when_the_demo_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_module(
        tmp_path,
        "tf_own_sleep",
        """
        from taskflow import TaskRegistry
        registry = TaskRegistry()

        @registry.task(name="sleep")
        async def my_sleep(payload, ctx):
            return "mine"
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert set(load_registry(["tf_own_sleep"]).names()) == {"sleep"}
    with pytest.raises(ConfigError, match=r"built-in demo task.*TASKFLOW_DEMO=0"):
        load_registry(["tf_own_sleep"], demo=True)
    # Two user modules with one name: a plain duplicate, not blamed on the demo tasks
    write_module(tmp_path, "tf_own_sleep_again", (tmp_path / "tf_own_sleep.py").read_text())
    with pytest.raises(DuplicateTask, match="sleep"):
        load_registry(["tf_own_sleep", "tf_own_sleep_again"])


def test_the_cli_finds_task_modules_in_the_current_directory(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "tf_here_tasks",
        """
        from taskflow import TaskRegistry
        registry = TaskRegistry()

        @registry.task(name="here")
        async def here(payload, ctx):
            return None
        """,
    )
    script = Path(sys.executable).parent / "taskflow"  # the console script, not `python -m`
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLOW_")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(script), "worker"],
        cwd=tmp_path,
        env={**env, "TASKFLOW_TASKS": "tf_here_tasks"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The module was imported (no "cannot import"); the worker then asks for its broker
    assert done.returncode == 2, done.stderr
    assert "cannot import" not in done.stderr
    assert "needs TASKFLOW_AMQP_URL" in done.stderr


def test_port_zero_is_a_valid_setting() -> None:
    from taskflow.config import Settings

    assert Settings.from_env({"TASKFLOW_PORT": "0"}).port == 0
    with pytest.raises(ConfigError, match=r"0\.\.65535"):
        Settings.from_env({"TASKFLOW_PORT": "70000"})


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
    with pytest.raises(ConfigError, match="echo"):
        load_registry(["tf_clashing_tasks"], demo=True)


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

    every = ["0001.jobs", "0002.history", "0003.api_keys"]
    assert taskflow("migrate", "--list").split() == every
    assert "0003.api_keys" in taskflow("migrate", "--rollback", "1")
    assert taskflow("migrate", "--list").split() == every[:2]
    assert taskflow("migrate").strip() == "applied: 0003.api_keys"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLOW_")}
    env.pop("PYTHONPATH", None)
    return env


def test_a_process_with_no_task_at_all_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskflow", "worker"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no_tasks_registered" in done.stderr


def test_port_zero_serves_on_a_free_port_and_logs_it(tmp_path: Path) -> None:
    import re
    import urllib.request

    env = {**clean_env(), "TASKFLOW_DATABASE_URL": "memory://", "TASKFLOW_HOME": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "taskflow", "up", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        port = None
        for line in process.stderr:
            if "taskflow_started" in line:
                match = re.search(r"port=(\d+)", line)
                assert match, line
                port = int(match.group(1))
                break
        assert port and port != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=10) as r:
            assert r.status == 200
    finally:
        process.terminate()
        process.communicate(timeout=60)  # drains and closes the pipe


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("no-such-host.invalid", False),
    ],
)
def test_auth_off_serves_loopback_only(host: str, allowed: bool) -> None:
    settings = Settings(host=host, auth="off")
    if allowed:
        check_exposure(settings)
    else:
        with pytest.raises(ConfigError, match="TASKFLOW_AUTH=required"):
            check_exposure(settings)
    check_exposure(Settings(host=host, auth="required"))  # with keys, any address


@pytest.mark.parametrize("command", ["up", "api"])
def test_a_wildcard_bind_without_keys_is_refused_before_anything_starts(
    tmp_path: Path, command: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TASKFLOW_HOME": str(tmp_path),
        "TASKFLOW_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
        "TASKFLOW_AUTH": "off",
    }
    done = subprocess.run(
        [sys.executable, "-m", "taskflow", command, "--host", "0.0.0.0", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "pgdata").exists()  # nothing started
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", port))  # the port was never taken
