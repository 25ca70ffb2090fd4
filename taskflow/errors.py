"""The one error tree. Each class's docstring is its default message."""

from __future__ import annotations

from typing import Any


class TaskflowError(Exception):
    """A TaskFlow error occurred."""

    code = "taskflow_error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details = details
        super().__init__(self.message)


class ConfigError(TaskflowError):
    """The configuration is invalid."""

    code = "config_error"


class UnknownTask(TaskflowError):
    """No task is registered under that name."""

    code = "unknown_task"


class DuplicateTask(TaskflowError):
    """A task with that name is already registered."""

    code = "duplicate_task"


class JobNotFound(TaskflowError):
    """No job has that id."""

    code = "job_not_found"


class InvalidTransition(TaskflowError):
    """The job cannot make that state change from its current state."""

    code = "invalid_transition"


class IdempotencyConflict(TaskflowError):
    """The idempotency key was already used with a different request."""

    code = "idempotency_conflict"


class ValidationError(TaskflowError):
    """The request is invalid."""

    code = "validation_error"


class ShuttingDown(TaskflowError):
    """TaskFlow is shutting down and accepts no new work."""

    code = "shutting_down"


class SupervisorEscalation(TaskflowError):
    """A child restarted more often than its restart intensity allows."""

    code = "supervisor_escalation"


class StoreError(TaskflowError):
    """The job store failed."""

    code = "store_error"


class TransportError(TaskflowError):
    """The transport failed."""

    code = "transport_error"


class Retry(Exception):
    """Raised by a task to ask for another attempt after ``delay`` seconds.

    The attempt still counts against the task's ``max_attempts``.
    """

    def __init__(self, delay: float | None = None, message: str = "retry requested") -> None:
        if delay is not None and delay < 0:
            raise ValueError("Retry delay must be >= 0")
        self.delay = delay
        super().__init__(message)


class LogStoreError(TaskflowError):
    """The log store failed; job logs are best effort, so nothing else fails with it."""

    code = "log_store_error"


class NotStorable(TaskflowError):
    """The store refused a value (a data error, not an outage): retrying cannot help."""

    code = "not_storable"


class KeyExists(TaskflowError):
    """A live API key already has this name; revoke it first, or choose another name."""

    code = "key_exists"


class KeyNotFound(TaskflowError):
    """No live API key has this name."""

    code = "key_not_found"
