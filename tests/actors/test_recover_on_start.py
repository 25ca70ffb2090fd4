"""Start-up recovery takes only the jobs of processes that are gone, never a live one's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from taskflow.jobs import JobStatus
from taskflow.main import gone_owners, local_resources, recover_on_start
from taskflow.memory import MemoryJobStore
from tests.contract.test_job_store import make_job

pytestmark = pytest.mark.anyio


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_gone_owners_are_this_hosts_pids_that_no_longer_run() -> None:
    host = socket.gethostname()
    dead = f"{host}:{dead_pid()}"
    alive = f"{host}:{os.getpid()}"
    assert gone_owners([dead, alive, "elsewhere:1", "embedded", None, dead]) == [dead]


async def test_recovery_on_start_spares_live_owners_and_takes_the_gone_ones() -> None:
    store = MemoryJobStore()
    res = local_resources(store)
    now = res.clock.now()
    host = socket.gethostname()
    owners = {
        "live": f"{host}:{os.getpid()}",
        "gone": f"{host}:{dead_pid()}",
        "remote": "another-host:1",
        "expired": "another-host:2",
    }
    ids: dict[str, str] = {}
    for name, owner in owners.items():
        job = make_job(max_attempts=3)
        await store.insert([job], now=now)
        until = now - 1 if name == "expired" else now + 60
        await store.claim([job.id], owner=owner, now=now, lease_until=until)
        ids[name] = job.id
    recovered, _ = await recover_on_start(res)
    assert recovered == 2
    status = {name: (await store.get(i)).status for name, i in ids.items()}
    assert status == {
        "live": JobStatus.IN_PROGRESS,
        "remote": JobStatus.IN_PROGRESS,
        "gone": JobStatus.PENDING,
        "expired": JobStatus.PENDING,
    }
