"""Dramatiq's side of the benchmark suite (`perf/suite.py`): the RabbitMQ broker with its
default middleware. The suite starts ``dramatiq peer_dramatiq``; completions are marked in
Redis (`peer_done.py`)."""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from peer_done import PREFIX, done

dramatiq.set_broker(
    RabbitmqBroker(url=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
)


@dramatiq.actor(queue_name=f"{PREFIX}.dramatiq")
def noop(tag: str | None = None) -> None:
    done(tag)


@dramatiq.actor(queue_name=f"{PREFIX}.dramatiq")
def sleep50() -> None:
    time.sleep(0.05)
    done()
