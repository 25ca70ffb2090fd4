"""TaskRegistry: registration, async detection, name clashes, per-task retry policy."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from taskflow.errors import DuplicateTask, UnknownTask
from taskflow.registry import DEFAULT_TIMEOUT, TaskRegistry, TaskSpec, type_names
from taskflow.retry import RetryPolicy


class BadInput(ValueError):
    pass


class WorseInput(BadInput):
    pass


def sync_task(payload: dict[str, Any], ctx: Any) -> str:
    return "sync"


async def async_task(payload: dict[str, Any], ctx: Any) -> str:
    return "async"


def test_decorator_without_arguments_uses_the_function_name() -> None:
    registry = TaskRegistry()

    @registry.task
    def resize(payload: dict[str, Any], ctx: Any) -> int:
        return 1

    spec = registry.get("resize")
    assert spec.fn is resize
    assert resize({}, None) == 1  # the decorator returns the function itself
    assert spec.policy == RetryPolicy()
    assert (spec.timeout, spec.queue, spec.priority) == (DEFAULT_TIMEOUT, "default", 0)
    assert "resize" in registry
    assert len(registry) == 1


def test_decorator_with_arguments() -> None:
    registry = TaskRegistry()

    @registry.task(name="images.resize", timeout=30.0, queue="images", priority=7)
    async def resize(payload: dict[str, Any], ctx: Any) -> None:
        return None

    spec = registry.get("images.resize")
    assert spec.fn is resize
    assert (spec.name, spec.timeout, spec.queue, spec.priority) == (
        "images.resize",
        30.0,
        "images",
        7,
    )
    assert "resize" not in registry
    assert list(registry.names()) == ["images.resize"]


def test_timeout_none_means_no_timeout() -> None:
    registry = TaskRegistry()
    registry.task(sync_task, timeout=None)
    assert registry.get("sync_task").timeout is None


@pytest.mark.parametrize(
    ("fn", "is_async"),
    [
        (sync_task, False),
        (async_task, True),
        (functools.partial(async_task, {}), True),
        (lambda payload, ctx: None, False),
    ],
    ids=["sync", "async", "partial-of-async", "lambda"],
)
def test_async_detection(fn: Any, is_async: bool) -> None:
    registry = TaskRegistry()
    registry.task(fn, name="t")
    assert registry.get("t").is_async is is_async


def test_duplicate_name_is_rejected() -> None:
    registry = TaskRegistry()
    registry.task(sync_task, name="job")
    with pytest.raises(DuplicateTask) as info:
        registry.task(async_task, name="job")
    assert info.value.code == "duplicate_task"
    assert info.value.details == {"task": "job"}
    assert registry.get("job").fn is sync_task  # the first one stays


def test_merge_adds_every_task() -> None:
    left, right = TaskRegistry(), TaskRegistry()
    left.task(sync_task)
    right.task(async_task)
    right.task(sync_task, name="other")
    left.merge(right)
    assert sorted(spec.name for spec in left) == ["async_task", "other", "sync_task"]
    assert left.get("async_task").fn is async_task


def test_merge_clash_raises_instead_of_overriding() -> None:
    left, right = TaskRegistry(), TaskRegistry()
    left.task(sync_task, name="job")
    right.task(async_task, name="job")
    with pytest.raises(DuplicateTask):
        left.merge(right)
    assert left.get("job").fn is sync_task


def test_get_unknown_task() -> None:
    registry = TaskRegistry()
    registry.task(sync_task)
    with pytest.raises(UnknownTask) as info:
        registry.get("nope")
    assert info.value.code == "unknown_task"
    assert info.value.details == {"task": "nope"}
    assert "nope" not in registry


def test_max_attempts_lands_in_the_policy() -> None:
    registry = TaskRegistry()
    registry.task(sync_task, max_attempts=7)
    assert registry.get("sync_task").policy.max_attempts == 7


def test_explicit_policy_is_kept_and_max_attempts_overrides_it() -> None:
    policy = RetryPolicy(max_attempts=4, base=0.5, cap=10.0, non_retryable=frozenset({"KeyError"}))
    registry = TaskRegistry()
    registry.task(sync_task, name="kept", retry=policy)
    registry.task(sync_task, name="overridden", retry=policy, max_attempts=9)
    assert registry.get("kept").policy == policy
    overridden = registry.get("overridden").policy
    assert (overridden.max_attempts, overridden.base, overridden.cap) == (9, 0.5, 10.0)


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_invalid_max_attempts_is_rejected(max_attempts: int) -> None:
    registry = TaskRegistry()
    with pytest.raises(ValueError, match="max_attempts"):
        registry.task(sync_task, max_attempts=max_attempts)


def test_non_retryable_classes_and_strings_land_in_the_policy() -> None:
    registry = TaskRegistry()
    registry.task(
        sync_task,
        retry=RetryPolicy(non_retryable=frozenset({"KeyError"})),
        non_retryable=(BadInput, "TimeoutError", "myapp.errors.Fatal"),
    )
    assert registry.get("sync_task").policy.non_retryable == {
        "KeyError",
        f"{__name__}.BadInput",
        "TimeoutError",
        "myapp.errors.Fatal",
    }


@pytest.mark.parametrize(
    ("raised", "rule"),
    [
        (BadInput, BadInput),
        (WorseInput, BadInput),
        (WorseInput, "BadInput"),
        (KeyError, "KeyError"),
    ],
    ids=["same-class", "subclass-by-class", "subclass-by-name", "builtin-by-name"],
)
def test_registered_rule_matches_the_failure_type_names(raised: type, rule: Any) -> None:
    registry = TaskRegistry()
    registry.task(sync_task, non_retryable=(rule,))
    names = set(type_names(raised))
    assert names & registry.get("sync_task").policy.non_retryable


def test_type_names_lists_the_mro() -> None:
    assert type_names(WorseInput) == (
        "WorseInput",
        f"{__name__}.WorseInput",
        "BadInput",
        f"{__name__}.BadInput",
        "ValueError",
        "builtins.ValueError",
    )


@pytest.mark.parametrize("exc_type", [Exception, BaseException, KeyboardInterrupt, KeyError])
def test_type_names_excludes_the_roots(exc_type: type[BaseException]) -> None:
    names = type_names(exc_type)
    for root in ("Exception", "BaseException", "object"):
        assert root not in names
        assert f"builtins.{root}" not in names
    assert (exc_type.__name__ in names) is (exc_type not in (Exception, BaseException))


@pytest.mark.parametrize("priority", [-1, 10, 100])
def test_priority_out_of_range_is_rejected(priority: int) -> None:
    registry = TaskRegistry()
    with pytest.raises(ValueError, match="priority"):
        registry.task(sync_task, priority=priority)
    assert len(registry) == 0


@pytest.mark.parametrize("priority", [0, 9])
def test_priority_bounds_are_accepted(priority: int) -> None:
    registry = TaskRegistry()
    registry.add(TaskSpec(name="t", fn=sync_task, is_async=False, priority=priority))
    assert registry.get("t").priority == priority
