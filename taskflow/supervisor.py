"""An OTP-style supervisor on AnyIO: start children in order, restart them, escalate, stop.

Inputs: a sequence of `ChildSpec`s, a `Strategy` and a `RestartPolicy`.
Outputs: structlog events `child_started`, `child_exited`, `child_failed`, `child_restarted`,
`child_stop_failed`, `supervisor_escalated`; `Supervisor.statistics()`.
Errors: `SupervisorEscalation` out of `Supervisor.run` when a child restarts more often than the
policy allows. The error leaves `run` bare, but a caller that runs the supervisor in its own task
group receives it wrapped in an `ExceptionGroup`; catch it with `except* SupervisorEscalation`.
Cancellation is never restarted and never swallowed.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskGroup, TaskStatus

from taskflow.backoff import ceiling
from taskflow.errors import SupervisorEscalation
from taskflow.log import get_logger

_logger = get_logger(__name__)


class Restart(enum.Enum):
    """When a child that ended is started again."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an exception
    TEMPORARY = "temporary"  # never


class Strategy(enum.Enum):
    """Which children are restarted when one of them must be restarted.

    Under ONE_FOR_ALL, children that ended for good (TEMPORARY ones, TRANSIENT ones that
    returned) are not started again.
    """

    ONE_FOR_ONE = "one_for_one"  # only that child
    ONE_FOR_ALL = "one_for_all"  # all of them: cancelled in reverse order, started in order


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """More than `max_restarts` restarts within `window` seconds escalate.

    The n-th restart within the window waits ``taskflow.backoff.ceiling(n - 1)``:
    `min(backoff_cap, backoff_base * 2 ** (n - 1))`.
    """

    max_restarts: int = 3
    window: float = 5.0
    backoff_base: float = 0.1
    backoff_cap: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """One child: `await tg.start(run)`; `run` calls `task_status.started()` when ready.

    `stop` asks the child to finish (e.g. stop intake) and returns quickly; the supervisor then
    waits up to `grace` seconds for `run` to return before cancelling it. An exception raised
    before `started()` counts as a crash like any other (restart, intensity, escalation).
    """

    id: str
    run: Callable[..., Awaitable[None]]
    restart: Restart = Restart.PERMANENT
    stop: Callable[[], Awaitable[None]] | None = None
    grace: float = 5.0


@dataclass(frozen=True, slots=True)
class SupervisorStats:
    restarts: Mapping[str, int]  # total restarts per child id
    running: tuple[str, ...]  # ids of the children currently running, in start order


class _Slot:
    """The supervisor's view of one child: its current run and how it ended."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.scope: anyio.CancelScope | None = None  # cancels the current run
        self.done: anyio.Event | None = None  # set when the current run has ended
        self.running = False
        self.exited = False  # ended on its own; the supervisor has not handled it yet
        self.error: Exception | None = None  # why it ended, if it raised
        self.gone = False  # ended and will not be restarted
        self.restarts = 0


class _ChildStatus:
    """Forwards `started()` to the real task status, logs it and remembers it."""

    def __init__(self, inner: TaskStatus[None], *, supervisor: str, child: str) -> None:
        self.inner, self.supervisor, self.child = inner, supervisor, child
        self.ready = False

    def started(self, value: None = None) -> None:
        self.inner.started(value)
        self.ready = True
        _logger.info("child_started", supervisor=self.supervisor, child=self.child)


def _leaf(group: ExceptionGroup[Exception]) -> Exception:
    """Unwrap groups of one exception, so the real cause is logged and kept."""
    error: Exception = group
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


class Supervisor:
    """Run children, restart them according to `strategy` and `policy`, stop them in reverse."""

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        policy: RestartPolicy = RestartPolicy(),
        name: str = "supervisor",
    ) -> None:
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate child ids in {ids!r}")
        self._slots = [_Slot(spec) for spec in children]
        self._strategy = strategy
        self._policy = policy
        self._name = name
        self._restart_times: list[float] = []
        self._running = False
        self._stopping = False
        self._loop_scope: anyio.CancelScope | None = None
        self._changed: anyio.Event | None = None
        self._finished: anyio.Event | None = None

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        """Start the children in order, then supervise them until they end or `stop()`.

        Raises `SupervisorEscalation` (the child's error as `__cause__`) past the restart
        intensity, after cancelling the other children. If `stop()` comes while children are
        still starting, `run` signals readiness anyway and returns. After `run` ended it may be
        called again (so a parent can restart a nested supervisor); restart counts are kept.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self._name!r} is already running")
        self._running, self._stopping, self._restart_times = True, False, []
        for slot in self._slots:
            slot.exited = slot.gone = False
        self._finished = anyio.Event()
        escalation: SupervisorEscalation | None = None
        ready = False
        try:
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as self._loop_scope:  # stop() cancels it
                    for slot in self._slots:
                        await tg.start(self._run_child, slot)
                    task_status.started()
                    ready = True
                    escalation = await self._supervise(tg)
                if not ready:  # stopped while starting: still report ready, then end
                    task_status.started()
                if self._stopping and escalation is None:
                    await self._stop_children()
                else:
                    await self._cancel_children()
        finally:
            self._running = False
            self._finished.set()
        if escalation is not None:
            raise escalation from escalation.__cause__

    async def stop(self) -> None:
        """Stop the children in reverse order, gracefully, and wait until `run` has returned.

        Each child's `stop` is awaited, then its `run` gets `grace` seconds to return before it is
        cancelled. A no-op before `run` is called or after it ended; safe to call twice.
        """
        if not self._running or self._finished is None:
            return
        self._stopping = True
        if self._loop_scope is not None:
            self._loop_scope.cancel()
        await self._finished.wait()

    def statistics(self) -> SupervisorStats:
        return SupervisorStats(
            restarts=MappingProxyType({s.spec.id: s.restarts for s in self._slots}),
            running=tuple(s.spec.id for s in self._slots if s.running),
        )

    async def _run_child(self, slot: _Slot, *, task_status: TaskStatus[None]) -> None:
        """One run of one child; records how it ended for `_supervise`."""
        spec = slot.spec
        status = _ChildStatus(task_status, supervisor=self._name, child=spec.id)
        slot.done, slot.running, slot.exited, slot.error = anyio.Event(), True, False, None
        error: Exception | None = None
        try:
            with anyio.CancelScope() as slot.scope:
                try:
                    await spec.run(task_status=status)
                except* Exception as group:
                    error = _leaf(group)
        finally:  # also when cancelled from outside: then the Cancelled propagates
            slot.running = False
            slot.done.set()
        if slot.scope.cancel_called:  # cancelled by this supervisor: not an exit to handle
            reason = "cancelled"
        else:
            reason = "normal" if error is None else "error"
            slot.exited, slot.error = True, error
            if self._changed is not None:
                self._changed.set()
        _logger.info(
            "child_exited", supervisor=self._name, child=spec.id, reason=reason, error=error
        )
        if not status.ready:  # ended before it was ready: let tg.start() return
            task_status.started()

    async def _supervise(self, tg: TaskGroup) -> SupervisorEscalation | None:
        """Handle exits until no child runs; return the escalation if intensity is exceeded."""
        policy = self._policy
        while True:
            slot = next((s for s in self._slots if s.exited), None)
            if slot is None:
                if not any(s.running for s in self._slots):
                    return None
                self._changed = anyio.Event()
                await self._changed.wait()
                continue
            slot.exited, spec, error = False, slot.spec, slot.error
            if spec.restart is Restart.TEMPORARY and error is not None:
                _logger.warning("child_failed", supervisor=self._name, child=spec.id, error=error)
            if spec.restart is Restart.TEMPORARY or (
                spec.restart is Restart.TRANSIENT and error is None
            ):
                slot.gone = True
                continue
            now = anyio.current_time()
            self._restart_times = [t for t in self._restart_times if t > now - policy.window]
            if len(self._restart_times) >= policy.max_restarts:
                message = (
                    f"child {spec.id!r} would restart more than {policy.max_restarts} times"
                    f" within {policy.window}s"
                )
                escalation = SupervisorEscalation(message, child=spec.id)
                escalation.__cause__ = error
                _logger.error(
                    "supervisor_escalated", supervisor=self._name, child=spec.id, error=error
                )
                return escalation
            self._restart_times.append(now)
            n = len(self._restart_times)
            delay = ceiling(n - 1, base=policy.backoff_base, cap=policy.backoff_cap)
            reason = "normal" if error is None else repr(error)
            if self._strategy is Strategy.ONE_FOR_ALL:
                await self._cancel_children()
                targets = [s for s in self._slots if not s.gone]
            else:
                targets = [slot]
            await anyio.sleep(delay)
            for target in targets:
                target.restarts += 1
                _logger.info(
                    "child_restarted",
                    supervisor=self._name,
                    child=target.spec.id,
                    reason=reason,
                    failed_child=spec.id,
                    delay=delay,
                )
                await tg.start(self._run_child, target)

    async def _cancel_children(self) -> None:
        """Cancel the running children in reverse start order, waiting for each to end."""
        for slot in reversed(self._slots):
            if slot.running and slot.scope is not None and slot.done is not None:
                slot.scope.cancel()
                await slot.done.wait()
            slot.exited = False

    async def _stop_children(self) -> None:
        """Graceful stop, in reverse start order: `stop`, up to `grace` seconds, then cancel."""
        for slot in reversed(self._slots):
            if not slot.running or slot.scope is None or slot.done is None:
                continue
            if slot.spec.stop is not None:
                with anyio.move_on_after(slot.spec.grace):
                    try:
                        await slot.spec.stop()
                    except Exception as exc:
                        _logger.warning(
                            "child_stop_failed",
                            supervisor=self._name,
                            child=slot.spec.id,
                            error=exc,
                        )
                    await slot.done.wait()
            slot.scope.cancel()
            await slot.done.wait()
