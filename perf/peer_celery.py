"""Celery's side of the benchmark suite (`perf/suite.py`): RabbitMQ broker, no result
backend, otherwise Celery's defaults. The suite starts ``celery -A peer_celery worker``.

Celery keeps no state a benchmark can read, so each task marks its completion in Redis:
one pipelined round trip (first and last completion time, a counter; or a list to wake a
latency probe). That costs the peer about 0.1 ms per job, which TaskFlow does not pay.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
app = Celery("peer_celery", broker=os.environ.get("BENCH_AMQP_URL", "amqp://guest@127.0.0.1//"))
app.conf.update(
    task_ignore_result=True,
    task_default_queue=f"{PREFIX}.celery",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_client: dict[int, redis.Redis] = {}


def done(tag: str | None = None) -> None:
    client = _client.get(os.getpid())
    if client is None:
        client = _client[os.getpid()] = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    now = time.time()
    pipe = client.pipeline(transaction=False)
    if tag:
        pipe.rpush(f"{PREFIX}:{tag}", b"1")
    else:
        pipe.setnx(f"{PREFIX}:first", now).set(f"{PREFIX}:last", now).incr(f"{PREFIX}:count")
    pipe.execute()


@app.task(name="noop")
def noop(tag: str | None = None) -> None:
    done(tag)


@app.task(name="sleep50")
def sleep50() -> None:
    time.sleep(0.05)
    done()
