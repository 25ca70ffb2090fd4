"""Celery's side of the benchmark suite (`perf/suite.py`): RabbitMQ broker, no result
backend, otherwise Celery's defaults. The suite starts ``celery -A peer_celery worker``;
completions are marked in Redis (`peer_done.py`)."""

from __future__ import annotations

import os
import time

from celery import Celery
from peer_done import PREFIX, done

app = Celery("peer_celery", broker=os.environ.get("BENCH_AMQP_URL", "amqp://guest@127.0.0.1//"))
app.conf.update(
    task_ignore_result=True,
    task_default_queue=f"{PREFIX}.celery",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop(tag: str | None = None) -> None:
    done(tag)


@app.task(name="sleep50")
def sleep50() -> None:
    time.sleep(0.05)
    done()
