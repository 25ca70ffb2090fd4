"""taskflow.client against a real server (hypercorn on a free port), async and blocking, one
error class per envelope code; and the invoke tasks built on it, run as a user runs them."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from actors.runtime import Runtime
from taskflow.client import AsyncClient, Client, DlqFilters, ServerUnreachable
from taskflow.client import errors as e
from taskflow.config import Settings
from tests.e2e.service import free_port
from web.app import create_app
from web.server import WebServer

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, auth="required", rate_limit_admin="30/minute")


@pytest.fixture
async def url(runtime: Runtime, settings: Settings) -> AsyncIterator[str]:
    server = WebServer(app=create_app(runtime, settings), host="127.0.0.1", port=0)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        yield f"http://127.0.0.1:{server.bound_port}"
        await server.stop()


@pytest.fixture
async def admin(runtime: Runtime) -> str:
    return (await runtime.create_key("root", ["admin"]))[1]


async def test_jobs_through_the_async_client(url: str, admin: str) -> None:
    async with AsyncClient(url, admin) as tf:
        assert admin not in repr(tf)
        ids = await tf.submit("echo", [{"i": 1}, {"i": 2}], priority=5)
        assert len(ids) == 2
        job = await tf.wait(ids[0], timeout=10)
        assert job.status == "completed" and job.result == {"i": 1} and job.terminal
        page = await tf.list(task="echo", limit=1)
        assert len(page.jobs) == 1 and page.next_cursor is not None
        seen = [j.id async for j in tf.iterate(task="echo", limit=1)]
        assert sorted(seen) == sorted(ids)
        (slow,) = await tf.submit("sleep", {"seconds": 5})
        cancelled = await tf.cancel(slow)
        assert cancelled.id == slow
        with pytest.raises(e.InvalidTransition):
            await tf.cancel(ids[0])
        with pytest.raises(e.JobNotFound) as info:
            await tf.get("00000000-0000-0000-0000-000000000000")
        assert info.value.status == 404 and info.value.request_id
        with pytest.raises(e.InvalidId):
            await tf.get("nope")
        with pytest.raises(e.UnknownTask):
            await tf.submit("no_such_task", {})
        await tf.submit("echo", {"a": 1}, idempotency_key="k1")
        with pytest.raises(e.IdempotencyConflict):
            await tf.submit("echo", {"a": 2}, idempotency_key="k1")
        health = await tf.health()
        assert health["status"] in ("ok", "degraded")
        metrics = await tf.metrics()
        assert set(metrics["jobs_by_status"]) >= {"pending", "completed"}
        assert metrics["cache"]["backend"] == "memory"


async def test_logs_and_their_live_tail(url: str, admin: str) -> None:
    async with AsyncClient(url, admin) as tf:
        (job_id,) = await tf.submit("chatty", {"ticks": 3, "every": 0.2})
        lines = [line async for line in tf.follow_logs(job_id)]
        assert any("started" in line for line in lines), lines
        text = await tf.logs(job_id)
        assert "completed" in text
        jsonl = await tf.logs(job_id, format="jsonl")
        assert jsonl.splitlines()[0].startswith("{")


async def test_dead_letters_through_the_client(url: str, admin: str) -> None:
    async with AsyncClient(url, admin) as tf:
        ids = await tf.submit("fail", [{}, {}, {}])
        for job_id in ids:
            await tf.wait(job_id, timeout=10)
        page = await tf.dlq_list(DlqFilters(task="fail"))
        assert {j.id for j in page.jobs} == set(ids)
        shown = await tf.dlq_show(ids[0])
        assert shown.attempt_history and shown.status == "failed"
        replayed = await tf.replay(ids[0], payload={"fixed": True}, reason="corrected")
        assert replayed.replays[-1]["reason"] == "corrected"
        with pytest.raises(e.NotDeadLetter):
            await tf.replay(ids[0])
        await tf.wait(ids[0], timeout=10)
        counted = await tf.replay_all(DlqFilters(task="fail"), dry_run=True)
        assert counted.matched == 3 and counted.done == 0 and counted.dry_run
        one = await tf.replay_all(DlqFilters(task="fail"), limit=1, reason="bulk")
        assert one.done == 1
        with pytest.raises(e.ConfirmationRequired):
            await tf.purge()
        for job_id in ids:
            await tf.wait(job_id, timeout=10)
        purged = await tf.purge(all=True)
        assert purged.done == 3
        assert (await tf.dlq_list()).jobs == []
        assert await tf.dead_messages() == []
        assert await tf.cleanup() == 0


async def test_keys_and_each_auth_error(url: str, admin: str) -> None:
    async with AsyncClient(url, admin) as tf:
        created = await tf.create_key("reader", ["read"])
        assert created.secret.startswith("tf_") and created.secret not in repr(created)
        with pytest.raises(e.KeyExists):
            await tf.create_key("reader", ["read"])
        with pytest.raises(e.ValidationFailed) as info:
            await tf.create_key("bad name", ["read"])
        assert info.value.details["fields"]
        assert [k.name for k in await tf.list_keys()] == ["reader", "root"]
        async with AsyncClient(url, created.secret) as reader:
            assert (await reader.list()).jobs == []
            with pytest.raises(e.Forbidden) as forbidden:
                await reader.submit("echo", {})
            assert forbidden.value.details["required_scope"] == "submit"
        revoked = await tf.revoke_key("reader")
        assert not revoked.active
        with pytest.raises(e.KeyNotFound):
            await tf.revoke_key("reader")
    async with AsyncClient(url, created.secret) as gone:
        with pytest.raises(e.Unauthorized):
            await gone.list()
    async with AsyncClient(url, "") as anonymous:
        with pytest.raises(e.Unauthorized) as info:
            await anonymous.list()
        assert "unauthorized (401)" in str(info.value)


async def test_rate_limited_carries_retry_after(url: str, admin: str) -> None:
    async with AsyncClient(url, admin) as tf:
        for _ in range(30):
            await tf.list_keys()
        with pytest.raises(e.RateLimited) as info:
            await tf.list_keys()
        assert info.value.retry_after is not None and info.value.retry_after >= 1


async def test_a_server_that_is_down() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", "k") as tf:
        with pytest.raises(ServerUnreachable) as info:
            await tf.health()
        assert "cannot reach http://127.0.0.1:" in str(info.value)


async def test_the_blocking_client(url: str, admin: str) -> None:
    def use() -> list[str]:
        with Client(url, admin) as tf:
            (job_id,) = tf.submit("echo", {"x": 1})
            assert tf.wait(job_id, timeout=10).result == {"x": 1}
            assert [j.id for j in tf.iterate(task="echo")] == [job_id]
            with pytest.raises(e.JobNotFound):
                tf.get("00000000-0000-0000-0000-000000000000")
            (chatty,) = tf.submit("chatty", {"ticks": 2})
            return list(tf.follow_logs(chatty))

    lines = await anyio.to_thread.run_sync(use)
    assert any("completed" in line for line in lines), lines


def error_codes_in_web() -> set[str]:
    import re

    found: set[str] = set()
    for path in (ROOT / "web").glob("*.py"):
        found |= set(re.findall(r'ApiError\(\s*\d{3},\s*"([a-z_]+)"', path.read_text()))
    from web.errors import HTTP_CODES, TASKFLOW_STATUS

    return found | set(TASKFLOW_STATUS) | set(HTTP_CODES.values())


def test_every_error_code_of_the_api_has_its_class() -> None:
    assert error_codes_in_web() - {"request_timeout"} <= set(e.BY_CODE)


async def invoke(url: str, key: str, *args: str) -> tuple[int, str, str]:
    done = await anyio.run_process(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), *args, "--url", url, "--key", key],
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_the_invoke_tasks(url: str, admin: str) -> None:
    code, out, err = await invoke(url, admin, "jobs.submit", "fail", "--count", "2")
    assert code == 0, err
    ids = out.split()
    assert len(ids) == 2
    async with AsyncClient(url, admin) as tf:
        for job_id in ids:
            await tf.wait(job_id, timeout=10)
    code, out, err = await invoke(url, admin, "dlq.list", "--task", "fail")
    assert code == 0 and all(i in out for i in ids), out
    code, out, _ = await invoke(url, admin, "jobs.show", ids[0])
    assert code == 0 and "attempts" in out and "dead_lettered" in out
    code, out, _ = await invoke(url, admin, "dlq.replay", "--reason", "bulk")
    assert code == 0 and "replayed 2" in out, out
    code, out, _ = await invoke(url, admin, "stats")
    assert code == 0 and "jobs by status" in out and "p99" in out
    code, out, _ = await invoke(url, admin, "keys.create", "ops", "--scopes", "read,submit")
    assert code == 0 and out.strip().splitlines()[-1].startswith("tf_")
    code, out, _ = await invoke(url, admin, "keys.list")
    assert code == 0 and "ops" in out and "read,submit" in out
    code, out, _ = await invoke(url, admin, "cleanup")
    assert code == 0 and "deleted 0" in out


async def test_invoke_errors_are_one_line_and_exit_1(url: str, admin: str) -> None:
    for key, args, expected in [
        ("wrong", ("jobs.list",), "error: unauthorized (401)"),
        (
            admin,
            ("jobs.show", "00000000-0000-0000-0000-000000000000"),
            "error: job_not_found (404)",
        ),
        (admin, ("jobs.submit", "echo", "--payload", "[1"), "error: --payload is not JSON"),
    ]:
        code, out, err = await invoke(url, key, *args)
        assert code == 1, (args, out, err)
        assert err.strip().splitlines() == [err.strip()] and err.startswith(expected), err
        assert "Traceback" not in err
    code, _, err = await invoke(f"http://127.0.0.1:{free_port()}", admin, "stats")
    assert code == 1 and err.startswith("error: server_unreachable: cannot reach"), err
