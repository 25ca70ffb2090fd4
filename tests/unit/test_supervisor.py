"""Supervisor: ordered start, restart strategies, intensity, backoff, graceful stop, nesting."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import structlog
import trio.testing
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from taskflow.errors import SupervisorEscalation
from taskflow.supervisor import (
    ChildSpec,
    Restart,
    RestartPolicy,
    Strategy,
    Supervisor,
    SupervisorStats,
)

pytestmark = pytest.mark.anyio

FAST = RestartPolicy(max_restarts=5, window=60.0, backoff_base=0.001, backoff_cap=0.01)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def mock_clock() -> pytest.MarkDecorator:
    """Run only on trio with a fresh autojumping MockClock: virtual time, no real waiting."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    return pytest.mark.parametrize(
        "anyio_backend", [pytest.param(("trio", {"clock": clock}), id="trio-mockclock")]
    )


def leaves(exc: BaseException) -> list[BaseException]:
    """Flatten exception groups into their leaf exceptions."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


class Log(list[str]):
    """A list of events that tests can wait on."""

    _changed: anyio.Event | None = None

    def append(self, entry: str) -> None:
        super().append(entry)
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, entry: str, count: int = 1) -> None:
        """Wait until `entry` was logged `count` times; callers bound it with `fail_after`."""
        while self.count(entry) < count:
            self._changed = anyio.Event()
            await self._changed.wait()


RunFn = Callable[..., Awaitable[None]]


def scripted(
    name: str,
    log: list[str],
    script: Callable[[int], Awaitable[None]],
) -> RunFn:
    """A child that records start/ready/exit in `log` and runs `script(n)` on its n-th run."""
    runs = 0

    async def run(*, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        log.append(f"{name}:start")
        try:
            task_status.started()
            await script(runs)
        finally:
            log.append(f"{name}:exit")

    return run


async def forever(_: int) -> None:
    await anyio.sleep_forever()


async def test_children_start_in_order_each_after_the_previous_is_ready() -> None:
    log = Log()

    def child(name: str) -> ChildSpec:
        async def run(*, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
            log.append(f"{name}:start")
            await anyio.sleep(0.01)  # setup takes a while
            log.append(f"{name}:ready")
            task_status.started()
            await anyio.sleep_forever()

        return ChildSpec(id=name, run=run)

    sup = Supervisor([child("a"), child("b"), child("c")])
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            log.append("supervisor:ready")
            assert sup.statistics() == SupervisorStats(
                restarts={"a": 0, "b": 0, "c": 0}, running=("a", "b", "c")
            )
            await sup.stop()

    assert log == [
        "a:start",
        "a:ready",
        "b:start",
        "b:ready",
        "c:start",
        "c:ready",
        "supervisor:ready",
    ]


async def test_one_for_one_restarts_only_the_crashed_permanent_child() -> None:
    log = Log()

    async def crash_twice(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        if n <= 2:
            raise ValueError(f"boom {n}")
        await anyio.sleep_forever()

    sup = Supervisor(
        [
            ChildSpec(id="sibling", run=scripted("sibling", log, forever)),
            ChildSpec(id="crashy", run=scripted("crashy", log, crash_twice)),
        ],
        policy=FAST,
    )
    with structlog.testing.capture_logs() as logs, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await log.wait_for("crashy:start", 3)
            assert sup.statistics().restarts == {"sibling": 0, "crashy": 2}
            assert sup.statistics().running == ("sibling", "crashy")
            await sup.stop()

    assert log.count("sibling:start") == 1
    restarted = [e for e in logs if e["event"] == "child_restarted"]
    assert [e["child"] for e in restarted] == ["crashy", "crashy"]
    assert "boom 1" in restarted[0]["reason"]
    exited = [e for e in logs if e["event"] == "child_exited" and e["reason"] == "error"]
    assert [str(e["error"]) for e in exited] == ["boom 1", "boom 2"]
    assert {e["child"] for e in logs if e["event"] == "child_started"} == {"sibling", "crashy"}


async def test_transient_restarts_after_error_only_and_temporary_never() -> None:
    log = Log()

    async def transient_script(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        if n == 1:
            raise RuntimeError("transient failure")
        # second run: returns normally, so it must not be restarted again

    async def temporary_script(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        raise KeyError("temporary failure")

    sup = Supervisor(
        [
            ChildSpec(id="keeper", run=scripted("keeper", log, forever)),
            ChildSpec(
                id="transient",
                run=scripted("transient", log, transient_script),
                restart=Restart.TRANSIENT,
            ),
            ChildSpec(
                id="temporary",
                run=scripted("temporary", log, temporary_script),
                restart=Restart.TEMPORARY,
            ),
        ],
        policy=FAST,
    )
    with structlog.testing.capture_logs() as logs, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await log.wait_for("transient:exit", 2)
            await log.wait_for("temporary:exit")
            await anyio.sleep(0.05)  # time enough for a wrong restart to show up
            stats = sup.statistics()
            await sup.stop()

    assert stats.running == ("keeper",)  # the supervisor kept running the others
    assert stats.restarts == {"keeper": 0, "transient": 1, "temporary": 0}
    assert log.count("transient:start") == 2
    assert log.count("temporary:start") == 1
    assert log.count("keeper:start") == 1
    failed = [e for e in logs if e["event"] == "child_failed"]
    assert [(e["child"], type(e["error"])) for e in failed] == [("temporary", KeyError)]


async def test_run_returns_when_every_child_ended_and_none_is_restarted() -> None:
    log = Log()

    async def done(_: int) -> None:
        await anyio.lowlevel.checkpoint()

    async def fail(_: int) -> None:
        raise OSError("gone")

    sup = Supervisor(
        [
            ChildSpec(id="t", run=scripted("t", log, done), restart=Restart.TRANSIENT),
            ChildSpec(id="tmp", run=scripted("tmp", log, fail), restart=Restart.TEMPORARY),
        ]
    )
    with anyio.fail_after(5):
        await sup.run()

    assert sorted(log) == ["t:exit", "t:start", "tmp:exit", "tmp:start"]
    assert sup.statistics().running == ()


async def test_escalates_past_intensity_with_cause_and_cancels_siblings() -> None:
    log = Log()

    async def always_crash(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        raise ValueError(f"crash {n}")

    policy = RestartPolicy(max_restarts=2, window=60.0, backoff_base=0.001)
    sup = Supervisor(
        [
            ChildSpec(id="sibling", run=scripted("sibling", log, forever)),
            ChildSpec(id="crashy", run=scripted("crashy", log, always_crash)),
        ],
        policy=policy,
    )
    with (
        structlog.testing.capture_logs() as logs,
        anyio.fail_after(5),
        pytest.raises((SupervisorEscalation, ExceptionGroup)) as info,
    ):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)

    [error] = leaves(info.value)  # anyio's task group may wrap it in an ExceptionGroup
    assert isinstance(error, SupervisorEscalation)
    assert error.details == {"child": "crashy"}
    assert "'crashy'" in str(error)
    assert isinstance(error.__cause__, ValueError)
    assert str(error.__cause__) == "crash 3"  # 2 restarts allowed; the 3rd crash escalates
    assert log.count("crashy:start") == 3
    assert log.count("sibling:start") == 1
    assert log.count("sibling:exit") == 1  # cancelled: its finally ran
    assert sup.statistics() == SupervisorStats(restarts={"sibling": 0, "crashy": 2}, running=())
    assert [e["child"] for e in logs if e["event"] == "supervisor_escalated"] == ["crashy"]


@mock_clock()
async def test_restarts_spaced_beyond_the_window_do_not_escalate() -> None:
    log = Log()
    survived = anyio.Event()

    async def crash_every_10s(n: int) -> None:
        if n > 20:
            survived.set()
            await anyio.sleep_forever()
        await anyio.sleep(10)
        raise ValueError(f"crash {n}")

    sup = Supervisor(
        [ChildSpec(id="c", run=scripted("c", log, crash_every_10s))],
        policy=RestartPolicy(max_restarts=1, window=5.0, backoff_base=0.1),
    )
    with anyio.fail_after(3600):  # virtual time; a hang would jump straight to this deadline
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await survived.wait()
            assert log.count("c:start") == 21
            assert sup.statistics().restarts == {"c": 20}
            await sup.stop()


@mock_clock()
async def test_backoff_doubles_up_to_the_cap() -> None:
    starts: list[float] = []
    survived = anyio.Event()

    async def run(*, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        starts.append(anyio.current_time())
        task_status.started()
        if len(starts) <= 5:
            raise ValueError("crash")
        survived.set()
        await anyio.sleep_forever()

    policy = RestartPolicy(max_restarts=5, window=1000.0, backoff_base=1.0, backoff_cap=6.0)
    sup = Supervisor([ChildSpec(id="c", run=run)], policy=policy)
    with anyio.fail_after(3600):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await survived.wait()
            await sup.stop()

    delays = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert delays == pytest.approx([1.0, 2.0, 4.0, 6.0, 6.0])


async def test_one_for_all_restarts_every_child_in_order() -> None:
    log = Log()

    async def crash_once(n: int) -> None:
        await anyio.sleep(0.01)
        if n == 1:
            log.append("b:crash")
            raise ValueError("b failed")
        await anyio.sleep_forever()

    sup = Supervisor(
        [
            ChildSpec(id="a", run=scripted("a", log, forever)),
            ChildSpec(id="b", run=scripted("b", log, crash_once)),
            ChildSpec(id="c", run=scripted("c", log, forever)),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        policy=FAST,
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await log.wait_for("c:start", 2)
            stats = sup.statistics()
            await sup.stop()

    assert log[: log.index("c:start", 3) + 1] == [
        "a:start",
        "b:start",
        "c:start",
        "b:crash",
        "b:exit",
        "c:exit",  # the others are cancelled in reverse start order...
        "a:exit",
        "a:start",  # ...and all are started again in order
        "b:start",
        "c:start",
    ]
    assert stats == SupervisorStats(restarts={"a": 1, "b": 1, "c": 1}, running=("a", "b", "c"))


@mock_clock()
async def test_graceful_stop_in_reverse_order_with_grace_then_cancel() -> None:
    # Given: a stops when asked, b ignores its stop request, c has no stop callback
    log = Log()
    a_stop = anyio.Event()

    async def a_script(_: int) -> None:
        await a_stop.wait()

    async def a_stop_request() -> None:
        log.append("a:stop")
        a_stop.set()

    async def b_stop_request() -> None:
        log.append(f"b:stop@{anyio.current_time():.0f}")

    def b_logged(name: str, log_: list[str]) -> RunFn:
        async def run(*, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                log_.append(f"{name}:exit@{anyio.current_time():.0f}")

        return run

    sup = Supervisor(
        [
            ChildSpec(id="a", run=scripted("a", log, a_script), stop=a_stop_request, grace=30),
            ChildSpec(id="b", run=b_logged("b", log), stop=b_stop_request, grace=30),
            ChildSpec(id="c", run=scripted("c", log, forever), grace=30),
        ]
    )
    outcome: list[str] = []

    async def run_supervisor(*, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        await sup.run(task_status=task_status)
        outcome.append("returned")

    # When
    with anyio.fail_after(3600):
        await sup.stop()  # before run: a no-op
        async with anyio.create_task_group() as tg:
            await tg.start(run_supervisor)
            log.clear()
            start = anyio.current_time()
            assert start == 0
            async with anyio.create_task_group() as stoppers:  # two concurrent stops are safe
                stoppers.start_soon(sup.stop)
                stoppers.start_soon(sup.stop)
        await sup.stop()  # after run ended: a no-op

    # Then
    assert log == ["c:exit", "b:stop@0", "b:exit@30", "a:stop", "a:exit"]
    assert outcome == ["returned"]
    assert sup.statistics() == SupervisorStats(restarts={"a": 0, "b": 0, "c": 0}, running=())


async def test_cancellation_is_neither_restarted_nor_swallowed() -> None:
    log = Log()
    outcome: list[str] = []
    sup = Supervisor([ChildSpec(id="c", run=scripted("c", log, forever))], policy=FAST)

    async def run_supervisor(*, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        try:
            await sup.run(task_status=task_status)
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise
        outcome.append("returned")

    with anyio.fail_after(5):
        with anyio.CancelScope() as outer:
            async with anyio.create_task_group() as tg:
                await tg.start(run_supervisor)
                outer.cancel()
                await anyio.sleep(0.05)  # would give a wrong restart time to happen
        assert outer.cancelled_caught

    assert outcome == ["cancelled"]
    assert log == ["c:start", "c:exit"]
    assert sup.statistics() == SupervisorStats(restarts={"c": 0}, running=())


async def test_nested_supervisor_restarts_its_own_child_only() -> None:
    log = Log()

    async def crash_once(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        if n == 1:
            raise ValueError("inner crash")
        await anyio.sleep_forever()

    inner = Supervisor(
        [ChildSpec(id="worker", run=scripted("worker", log, crash_once))],
        policy=FAST,
        name="inner",
    )
    outer = Supervisor(
        [
            ChildSpec(id="other", run=scripted("other", log, forever)),
            ChildSpec(id="inner", run=inner.run, stop=inner.stop),
        ],
        policy=FAST,
        name="outer",
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(outer.run)
            await log.wait_for("worker:start", 2)
            assert inner.statistics().restarts == {"worker": 1}
            assert outer.statistics() == SupervisorStats(
                restarts={"other": 0, "inner": 0}, running=("other", "inner")
            )
            await outer.stop()

    assert log.count("other:start") == 1
    assert log[-2:] == ["worker:exit", "other:exit"]  # inner (started last) stopped first
    assert inner.statistics().running == ()


async def test_nested_supervisor_escalation_restarts_it_in_the_parent() -> None:
    log = Log()

    async def crash_first_two(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        if n <= 2:
            raise ValueError(f"crash {n}")
        await anyio.sleep_forever()

    inner = Supervisor(
        [ChildSpec(id="worker", run=scripted("worker", log, crash_first_two))],
        policy=RestartPolicy(max_restarts=0, backoff_base=0.001),
        name="inner",
    )
    outer = Supervisor(
        [ChildSpec(id="inner", run=inner.run, stop=inner.stop)], policy=FAST, name="outer"
    )
    with structlog.testing.capture_logs() as logs, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(outer.run)
            await log.wait_for("worker:start", 3)
            assert outer.statistics().restarts == {"inner": 2}
            await outer.stop()

    exits: list[MutableMapping[str, Any]] = [
        e for e in logs if e["event"] == "child_exited" and e["child"] == "inner"
    ]
    assert [type(e["error"]) for e in exits[:2]] == [SupervisorEscalation] * 2
    assert [str(e["error"].__cause__) for e in exits[:2]] == ["crash 1", "crash 2"]
