"""TaskFlow: a job orchestrator built as a supervisor tree of AnyIO actors."""

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
]
__version__ = "0.1.0"
