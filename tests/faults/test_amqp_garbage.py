"""Scenario 6 of the fault suite, AMQP side: raw garbage on a work queue is dead-lettered
with its reason, and the worker keeps going."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.service import http
from tests.e2e.test_distributed import publish_raw, submit_many
from tests.faults.harness import base_env, completed_twice, service, stop_all
from tests.rabbit import Vhost, rabbitmqctl

pytestmark = pytest.mark.timeout(180)


def dead_lettered(vhost: Vhost) -> int:
    """Messages in the broker's dead-letter queue of the vhost."""
    out = rabbitmqctl(
        "list_queues", "-p", vhost.name, "--no-table-headers", "-q", "name", "messages"
    )
    for line in out.splitlines():
        name, _, count = line.partition("\t")
        if name.strip() == "taskflow.dead":
            return int(count.strip())
    raise AssertionError(f"no taskflow.dead queue in {out!r}")


def amqp_corpus() -> list[tuple[str, bytes]]:
    """Messages any AMQP client could put on a work queue, none of them a valid job."""
    import uuid

    from taskflow.codec import encode
    from taskflow.messages import JobMessage

    unknown = encode(JobMessage(job_id=str(uuid.uuid4()), task="record", queue="default"))
    return [
        ("empty", b""),
        ("binary garbage", b"\x00\x01 not a message"),
        ("invalid utf-8", b"\xff\xfe\xfd"),
        ("a json list", b"[1, 2, 3]"),
        ("json of the wrong shape", b'{"job_id": 5, "task": ["x"]}'),
        ("truncated", unknown[: len(unknown) // 2]),
        ("1 MiB of noise", bytes(range(256)) * 4096),
        ("a job nobody stored", unknown),
    ]


def test_raw_amqp_garbage_is_dead_lettered_with_its_reason_and_work_goes_on(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each message is kept with its reason (GET /api/v1/dlq/messages) and rejected to the
    broker's dead-letter queue; the worker neither crashes nor stalls: jobs submitted after
    the garbage complete."""
    import anyio

    env = base_env(pg_url, rabbit_vhost)
    api = service(tmp_path, "api", env, "api")
    worker = service(tmp_path, "worker", env, "worker")
    corpus = amqp_corpus()
    try:
        api.start()
        worker.start_worker()
        for _, body in corpus:
            anyio.run(publish_raw, rabbit_vhost.url, "taskflow.default", body)
        ids = submit_many(api, "record", [{"ms": 1}] * 20)
        done = api.wait_terminal(ids, timeout=60)
        assert {j["status"] for j in done.values()} == {"completed"}
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(messages) < len(corpus) and time.monotonic() < deadline:
            _, page = http("GET", f"{api.url}/api/v1/dlq/messages?limit=100")
            messages = page["messages"]
            time.sleep(0.3)
        reasons = Counter(str(m["reason"]).split(":")[0] for m in messages)
        with capsys.disabled():
            print(
                f"\namqp garbage: messages={len(corpus)} dead_lettered={len(messages)} "
                f"reasons={dict(reasons)} jobs_after={len(ids)} completed_after={len(done)}"
            )
        assert len(messages) == len(corpus), messages
        assert reasons == {"malformed_message": len(corpus) - 1, "unknown_job": 1}, reasons
        assert {m["queueName"] for m in messages} == {"default"}
        assert worker.process is not None and worker.process.poll() is None
        assert dead_lettered(rabbit_vhost) == len(corpus)  # rejected into the broker's DLQ too
        assert not completed_twice(pg_url)
    finally:
        stop_all([api, worker])
