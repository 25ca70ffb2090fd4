"""Publishing stored jobs, outbox style: publish, then mark them published.

Whoever moves a job to ``pending`` publishes it with ``publish_jobs``. If the process dies
between the commit and the mark, the reaper's outbox sweep finds the row unpublished and
publishes it again; a duplicate message is harmless (the claim lets one run).
"""

from __future__ import annotations

from collections.abc import Sequence

from taskflow.jobs import Job
from taskflow.messages import JobMessage
from taskflow.ports import JobStore, Transport


async def publish_jobs(transport: Transport, store: JobStore, jobs: Sequence[Job]) -> None:
    """Publish ``jobs`` (confirmed by the transport), then mark them published."""
    if not jobs:
        return
    await transport.publish(
        [JobMessage(job_id=j.id, task=j.task, queue=j.queue, priority=j.priority) for j in jobs]
    )
    await store.mark_published([j.id for j in jobs])
