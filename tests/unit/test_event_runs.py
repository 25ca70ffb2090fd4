"""runs_of_one_kind: how the RabbitMQ event bus packs a burst of events into messages."""

from __future__ import annotations

import random

import pytest

from taskflow.messages import Event, JobProgressed, JobStarted, JobSucceeded, WorkerHeartbeat
from taskflow.rabbitmq.events import runs_of_one_kind


def started(job: str) -> JobStarted:
    return JobStarted(job_id=job, task="t", attempt=1, at=1.0, queued_at=0.0)


def succeeded(job: str) -> JobSucceeded:
    return JobSucceeded(job_id=job, task="t", attempt=1, at=2.0, started_at=1.0, created_at=0.0)


def progressed(job: str) -> JobProgressed:
    return JobProgressed(job_id=job, attempt=1, percent=50.0, message=None, at=1.5)


def per_job(events: list[Event]) -> dict[str | None, list[Event]]:
    out: dict[str | None, list[Event]] = {}
    for event in events:
        out.setdefault(getattr(event, "job_id", None), []).append(event)
    return out


def test_an_interleaved_burst_of_many_jobs_goes_as_one_run_per_type() -> None:
    events: list[Event] = []
    for i in range(100):  # started(i) then, a little later, succeeded(i - 1)
        events.append(started(f"j{i}"))
        if i:
            events.append(succeeded(f"j{i - 1}"))
    runs = runs_of_one_kind(events)
    assert [type(r[0]) for r in runs] == [JobStarted, JobSucceeded]
    assert sum(len(r) for r in runs) == len(events)


def test_a_job_whose_next_event_would_overtake_it_starts_a_new_run() -> None:
    # succeeded(a) first, then started(b), succeeded(b): b's success must not join a's run,
    # which goes before b's start.
    events: list[Event] = [succeeded("a"), started("b"), succeeded("b")]
    runs = runs_of_one_kind(events)
    flat = [e for r in runs for e in r]
    assert per_job(flat) == per_job(events)
    assert len(runs) == 3


@pytest.mark.parametrize("seed", range(30))
def test_every_jobs_events_keep_their_order_and_none_is_lost(seed: int) -> None:
    rng = random.Random(seed)
    jobs = [f"j{i}" for i in range(rng.randint(1, 12))]
    stage = dict.fromkeys(jobs, 0)
    events: list[Event] = []
    for _ in range(rng.randint(1, 200)):
        if rng.random() < 0.05:
            events.append(WorkerHeartbeat(worker_id="w", at=1.0, interval=2.0))
            continue
        job = rng.choice(jobs)
        make = (started, progressed, progressed, succeeded)[stage[job] % 4]
        stage[job] += 1
        events.append(make(job))
    runs = runs_of_one_kind(events)
    assert all(r and all(type(e) is type(r[0]) for e in r) for r in runs)
    flat = [e for r in runs for e in r]
    assert sorted(map(id, flat)) == sorted(map(id, events))  # the same events, once each
    assert per_job(flat) == per_job(events)  # each job's (and the heartbeats') order kept
