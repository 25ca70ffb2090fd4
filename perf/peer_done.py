"""How the peers' tasks mark a completion for the suite (`perf/suite.py`): Celery and
Dramatiq keep no state a benchmark can read, so each task does one pipelined Redis round
trip (first and last completion time and a counter, or a list that wakes a latency probe).
That costs a peer about 0.1 ms per job, which TaskFlow does not pay."""

from __future__ import annotations

import os
import time

import redis

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
_clients: dict[int, redis.Redis] = {}  # per process: Celery's prefork children fork


def done(tag: str | None = None) -> None:
    client = _clients.get(os.getpid())
    if client is None:
        client = _clients[os.getpid()] = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    now = time.time()
    pipe = client.pipeline(transaction=False)
    if tag:
        pipe.rpush(f"{PREFIX}:{tag}", b"1")
    else:
        pipe.setnx(f"{PREFIX}:first", now).set(f"{PREFIX}:last", now).incr(f"{PREFIX}:count")
    pipe.execute()
