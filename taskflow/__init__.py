"""TaskFlow: a job orchestrator built as a supervisor tree of AnyIO actors."""

from typing import Any

from taskflow.context import JobContext
from taskflow.errors import (
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    Retry,
    TaskflowError,
    UnknownTask,
)
from taskflow.jobs import Job, JobError, JobStatus
from taskflow.registry import TaskRegistry, TaskSpec
from taskflow.retry import RetryPolicy
from taskflow.version import __version__

__all__ = [
    "IdempotencyConflict",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobError",
    "JobNotFound",
    "JobStatus",
    "Retry",
    "RetryPolicy",
    "TaskRegistry",
    "TaskSpec",
    "TaskflowError",
    "UnknownTask",
    "__version__",
]

_PRODUCER = {"connect", "connect_blocking", "NewJob"}


def __getattr__(name: str) -> Any:
    """``taskflow.connect``, ``taskflow.connect_blocking`` and ``taskflow.NewJob``, imported
    on first use (the producer pulls in the drivers; ``import taskflow`` stays light)."""
    if name == "NewJob":
        from taskflow.messages import NewJob

        return NewJob
    if name in _PRODUCER:
        from taskflow import main

        return getattr(main, name)
    raise AttributeError(f"module 'taskflow' has no attribute {name!r}")
