"""The Python producer (`taskflow.connect`) against real PostgreSQL and RabbitMQ, with a real
`taskflow worker` process running what it submits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import psycopg
import pytest

import taskflow
from actors.runtime import Runtime
from taskflow.errors import ConfigError, ValidationError
from taskflow.jobs import JobStatus
from taskflow.main import load_registry
from tests.e2e.service import Service
from tests.rabbit import Vhost

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the producer's drivers are asyncio-only


@pytest.fixture
def worker(tmp_path: Path, pg_url: str, rabbit_vhost: Vhost) -> Iterator[Service]:
    env = {
        "TASKFLOW_DATABASE_URL": pg_url,
        "TASKFLOW_AMQP_URL": rabbit_vhost.url,
        "TASKFLOW_DEMO": "1",
        "TASKFLOW_CONCURRENCY": "8",
    }
    (tmp_path / "w").mkdir()
    service = Service(home=tmp_path / "w", env=env, command=("worker",))
    service.start_worker()
    try:
        yield service
    finally:
        service.stop()


def demo() -> taskflow.TaskRegistry:
    return load_registry([], demo=True)


def producer(pg_url: str, vhost: Vhost) -> AbstractAsyncContextManager[Runtime]:
    """The producer on this test's database and vhost, knowing the demo tasks."""
    return taskflow.connect(database_url=pg_url, amqp_url=vhost.url, registry=demo())


async def test_submit_returns_after_the_commit_and_wait_sees_the_worker_finish(
    worker: Service, pg_url: str, rabbit_vhost: Vhost
) -> None:
    async with producer(pg_url, rabbit_vhost) as tf:
        job_id = await tf.submit("echo", {"n": 1}, priority=5, queue="default")
        # Durable before submit returned: another connection reads the row
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT task, priority FROM taskflow_jobs WHERE id = %s", (job_id,)
            ).fetchone()
        assert row == ("echo", 5)
        job = await tf.wait(job_id, timeout=30)
        assert (job.status, job.result, job.attempts) == (JobStatus.COMPLETED, {"n": 1}, 1)
        assert (await tf.get(job_id)).status is JobStatus.COMPLETED


async def test_concurrent_submitters_share_group_commits_and_batches_are_one_call(
    worker: Service, pg_url: str, rabbit_vhost: Vhost
) -> None:
    async with producer(pg_url, rabbit_vhost) as tf:
        ids: list[str] = []

        async def submit(i: int) -> None:
            ids.append(await tf.submit("echo", {"i": i}))

        async with anyio.create_task_group() as tg:
            for i in range(64):
                tg.start_soon(submit, i)
        many = await tf.submit_many(
            [taskflow.NewJob(task="echo", payload={"k": k}) for k in range(100)]
        )
        stats = tf.tree.ingest.statistics()
        assert stats.submitted == 164
        assert stats.batches < 64  # the 64 concurrent calls were committed together
        jobs = [await tf.wait(j, timeout=60) for j in [*ids, *many]]
        assert {j.status for j in jobs} == {JobStatus.COMPLETED}
        assert len(set(ids) | set(many)) == 164


async def test_bad_input_is_refused_before_anything_is_stored(
    pg_url: str, rabbit_vhost: Vhost
) -> None:
    async with producer(pg_url, rabbit_vhost) as tf:
        with pytest.raises(taskflow.UnknownTask):
            await tf.submit("no_such_task", {})
        with pytest.raises(ValidationError):
            await tf.submit("echo", {}, priority=42)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM taskflow_jobs").fetchone() == (0,)


async def test_cancel_and_replay_from_the_producer(
    worker: Service, pg_url: str, rabbit_vhost: Vhost
) -> None:
    async with producer(pg_url, rabbit_vhost) as tf:
        later = await tf.submit("echo", {}, delay=3600)
        assert (await tf.cancel(later)).status is JobStatus.CANCELLED
        failing = await tf.submit("fail", {"times": 1}, max_attempts=1)
        dead = await tf.wait(failing, timeout=30)
        assert dead.status is JobStatus.FAILED
        replayed = await tf.replay(failing)
        assert replayed is not None and replayed.replay_count == 1
        again = await tf.wait(failing, timeout=30)  # the demo `fail` fails attempt 1 again
        assert (again.status, again.attempts, again.replay_count) == (JobStatus.FAILED, 1, 1)
        assert again.original_error is not None


def test_the_blocking_facade_submits_and_waits_from_plain_threads(
    worker: Service, pg_url: str, rabbit_vhost: Vhost
) -> None:
    with taskflow.connect_blocking(
        database_url=pg_url, amqp_url=rabbit_vhost.url, registry=demo()
    ) as tf:
        results: dict[int, object] = {}

        def client(i: int) -> None:
            job_id = tf.submit("echo", {"t": i})
            results[i] = tf.wait(job_id, timeout=30).result

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: {"t": i} for i in range(8)}
        assert tf.get(tf.submit_many([taskflow.NewJob(task="echo")])[0]).task == "echo"


async def test_connect_says_what_it_needs() -> None:
    from taskflow.config import Settings

    with pytest.raises(ConfigError, match="TASKFLOW_AMQP_URL"):
        async with taskflow.connect(Settings(), registry=demo()):
            pass


def test_connect_refuses_trio() -> None:
    import trio

    async def main() -> None:
        async with taskflow.connect(registry=demo()):
            pass

    with pytest.raises(ConfigError, match="asyncio"):
        trio.run(main)
