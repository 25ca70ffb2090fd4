"""Dramatiq's side of the benchmark suite (`perf/suite.py`): the RabbitMQ broker with its
default middleware. The suite starts ``dramatiq peer_dramatiq``. Completions are marked in
Redis as for Celery (see `peer_celery.py`)."""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
QUEUE = f"{PREFIX}.dramatiq"
dramatiq.set_broker(
    RabbitmqBroker(url=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
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


@dramatiq.actor(queue_name=QUEUE)
def noop(tag: str | None = None) -> None:
    done(tag)


@dramatiq.actor(queue_name=QUEUE)
def sleep50() -> None:
    time.sleep(0.05)
    done()
