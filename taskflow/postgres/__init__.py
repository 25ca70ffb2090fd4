"""The PostgreSQL adapter of the JobStore port (asyncio backend)."""

from taskflow.postgres.connect import (
    embedded_server,
    open_embedded_server,
    open_pool,
    open_store,
    probe,
)
from taskflow.postgres.migrate import migrate
from taskflow.postgres.store import PostgresJobStore

__all__ = [
    "PostgresJobStore",
    "embedded_server",
    "migrate",
    "open_embedded_server",
    "open_pool",
    "open_store",
    "probe",
]
