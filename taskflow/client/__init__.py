"""taskflow.client: a typed HTTP client for the TaskFlow REST API, async and blocking.

``AsyncClient`` (asyncio or trio, on httpx) and ``Client`` (the same calls, blocking) cover
every route: jobs (submit, get, list, wait, cancel, logs and their live tail), dead letters
(list, show, replay, replay many, purge), keys, metrics, health and cleanup. Each error code
of the API's envelope raises its own class (``taskflow.client.errors``), and a server that
cannot be reached raises ``ServerUnreachable``. The URL and key default to ``TASKFLOW_URL``
(else ``http://127.0.0.1:8000``) and ``TASKFLOW_KEY``.

    async with AsyncClient() as tf:
        (job_id,) = await tf.submit("echo", {"x": 1})
        job = await tf.wait(job_id, timeout=30)
"""

from taskflow.client.aio import AsyncClient, DlqFilters
from taskflow.client.errors import ApiError, ServerUnreachable
from taskflow.client.models import BulkResult, CreatedKey, Job, JobPage, KeyInfo
from taskflow.client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "BulkResult",
    "Client",
    "CreatedKey",
    "DlqFilters",
    "Job",
    "JobPage",
    "KeyInfo",
    "ServerUnreachable",
]
