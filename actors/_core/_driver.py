"""The scheduling seam between actor logic and whatever runs it.

The runtime (mailboxes, asks, monitors, links, supervision) is written once,
against :class:`Driver`. Two drivers exist:

* :class:`TrioDriver` (here) runs each actor as a trio task; production.
* ``simulations.kernel.SimDriver`` steps the same coroutines from a
  single-threaded virtual-time event loop; every run is reproducible.

An actor's coroutine may await only what a driver (or a seam built on it,
such as the Clock) hands out: :meth:`Waiter.wait`. That rule is what lets the
simulator own scheduling completely.

:class:`TrioDriver` is public through :mod:`actors`; the protocol and its
parts (:class:`Driver`, :class:`Waiter`, :class:`TaskHandle`,
:class:`TimerHandle`, :data:`TIMED_OUT`), for other drivers, through
:mod:`actors.lowlevel`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

import trio

from actors.seams.clock import Clock


class _TimedOut:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TIMED_OUT"


TIMED_OUT: Final = _TimedOut()
"""Returned by :meth:`Waiter.wait` when its timeout elapsed before a wake."""


class Waiter(Protocol):
    """A reusable parking spot for one task at a time."""

    async def wait(self, timeout: float | None) -> object:
        """Park until :meth:`wake` (returns its value) or ``timeout`` seconds
        pass (returns :data:`TIMED_OUT`)."""
        ...

    def wake(self, value: object = None) -> bool:
        """Resume the parked task with ``value``; False if none was parked."""
        ...


class TaskHandle(Protocol):
    def kill(self) -> None:
        """Cancel the task at its current (or next) suspension point."""
        ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Driver(Protocol):
    clock: Clock
    killed: tuple[type[BaseException], ...]
    """The exception types :meth:`TaskHandle.kill` raises inside a task."""

    def new_waiter(self) -> Waiter: ...

    async def checkpoint(self) -> None:
        """Let other tasks run (and deliver a pending kill) before continuing."""
        ...

    def start(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> TaskHandle: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class _TrioWaiter:
    __slots__ = ("_task", "_value")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._value: object = None

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self, timeout: float | None) -> object:
        self._task = trio.lowlevel.current_task()
        if timeout is None:
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        else:
            with trio.move_on_after(timeout):
                await trio.lowlevel.wait_task_rescheduled(self._abort)
                return self._take()
            return TIMED_OUT
        return self._take()

    def _take(self) -> object:
        value, self._value = self._value, None
        return value

    def wake(self, value: object = None) -> bool:
        task = self._task
        if task is None:
            return False
        self._task = None
        self._value = value
        trio.lowlevel.reschedule(task)
        return True


class _TrioTask:
    __slots__ = ("_scope",)

    def __init__(self, scope: trio.CancelScope) -> None:
        self._scope = scope

    def kill(self) -> None:
        self._scope.cancel()

    def cancel(self) -> None:
        self._scope.cancel()


class TrioDriver:
    """Runs actors as tasks of one trio nursery.

    Timeouts here use trio's deadlines, so ``clock`` must read trio's clock
    (``nodes.clock.TrioClock``, or a test clock driving trio's ``MockClock``);
    it is passed in, never chosen here: real implementations of the seams
    belong to the composition roots.
    """

    killed: tuple[type[BaseException], ...] = (trio.Cancelled,)

    def __init__(self, nursery: trio.Nursery, clock: Clock) -> None:
        self._nursery = nursery
        self.clock: Clock = clock

    def new_waiter(self) -> Waiter:
        return _TrioWaiter()

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    def start(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> TaskHandle:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await fn()

        self._nursery.start_soon(run)
        return _TrioTask(scope)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        scope = trio.CancelScope()
        clock = self.clock

        async def fire() -> None:
            with scope:
                await clock.sleep(delay)
                callback()

        self._nursery.start_soon(fire)
        return _TrioTask(scope)
