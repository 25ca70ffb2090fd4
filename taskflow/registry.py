"""The task registry: names to functions plus their per-task policy."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, overload

from taskflow import limits
from taskflow.errors import DuplicateTask, UnknownTask
from taskflow.retry import RetryPolicy

TaskFn = Callable[..., Any]
F = TypeVar("F", bound=TaskFn)

DEFAULT_TIMEOUT = 300.0


def type_names(exc_type: type[BaseException]) -> tuple[str, ...]:
    """Every name a non-retryable rule may use for ``exc_type`` and its bases."""
    names: list[str] = []
    for cls in exc_type.__mro__:
        if cls in (BaseException, Exception, object):
            continue
        names.append(cls.__name__)
        names.append(f"{cls.__module__}.{cls.__qualname__}")
    return tuple(names)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """A registered task. ``is_async`` tasks run on the loop; the others in worker threads."""

    name: str
    fn: TaskFn
    is_async: bool
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = DEFAULT_TIMEOUT
    queue: str = "default"
    priority: int = 0


class TaskRegistry:
    """Tasks by name. Pass it in; there is no global registry.

    ```python
    registry = TaskRegistry()

    @registry.task(name="resize", max_attempts=5, timeout=30.0)
    async def resize(payload: dict, ctx: JobContext) -> dict: ...
    ```
    """

    def __init__(self) -> None:
        self._tasks: dict[str, TaskSpec] = {}

    @overload
    def task(self, fn: F, /) -> F: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        non_retryable: tuple[type[BaseException] | str, ...] = (),
        queue: str = "default",
        priority: int = 0,
    ) -> Callable[[F], F]: ...

    def task(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        non_retryable: tuple[type[BaseException] | str, ...] = (),
        queue: str = "default",
        priority: int = 0,
    ) -> F | Callable[[F], F]:
        """Register a task; usable as ``@registry.task`` or ``@registry.task(name=...)``."""

        def register(f: F) -> F:
            policy = retry or RetryPolicy()
            extra = frozenset(
                n if isinstance(n, str) else f"{n.__module__}.{n.__qualname__}"
                for n in non_retryable
            )
            policy = replace(
                policy,
                max_attempts=policy.max_attempts if max_attempts is None else max_attempts,
                non_retryable=policy.non_retryable | extra,
            )
            self.add(
                TaskSpec(
                    name=name or f.__name__,
                    fn=f,
                    is_async=inspect.iscoroutinefunction(f),
                    policy=policy,
                    timeout=timeout,
                    queue=queue,
                    priority=priority,
                )
            )
            return f

        return register(fn) if fn is not None else register

    def add(self, spec: TaskSpec) -> None:
        if spec.name in self._tasks:
            raise DuplicateTask(f"task {spec.name!r} is already registered", task=spec.name)
        if not limits.MIN_PRIORITY <= spec.priority <= limits.MAX_PRIORITY:
            raise ValueError("priority must be 0..9")
        self._tasks[spec.name] = spec

    def merge(self, other: TaskRegistry) -> None:
        """Add every task of ``other``; a name clash is an error, never a silent override."""
        for spec in other:
            self.add(spec)

    def get(self, name: str) -> TaskSpec:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(f"no task named {name!r}", task=name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)

    def names(self) -> Mapping[str, TaskSpec]:
        return dict(self._tasks)
