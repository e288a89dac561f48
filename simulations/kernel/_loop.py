"""The simulator's event loop: virtual time, one runnable task at a time.

Why not trio under ``MockClock``
--------------------------------
trio deliberately shuffles the batch of runnable tasks on every scheduler
tick (``trio._core._run`` reverses the batch at random, or shuffles it
under its Hypothesis hook), and breaks ties between equal deadlines with
object ids, which differ between processes. Pinning all of that would tie
reproducibility to trio internals that change between releases.

So the simulator owns scheduling. This loop keeps a single priority queue of
``(virtual_time, sequence_number)`` events and runs exactly one at a time;
the sequence number, assigned when an event is scheduled, makes ties FIFO.
Actor coroutines are stepped here directly (``coroutine.send``), and the only
thing they may suspend on is this loop's park trap (handed out by
``SimDriver``'s waiters and the virtual clock). At most one actor is ever
runnable, and which one runs next is a pure function of what happened
before, so a seed fixes the whole run: no threads, no OS time, no hash
order (nothing here iterates a set).

A coroutine that awaits anything else (say ``trio.sleep``) is thrown a
:class:`ForeignAwait`, which crashes that actor with a clear report instead of
silently escaping virtual time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Final

from actors.lowlevel import TIMED_OUT


class SimKilled(BaseException):
    """Raised inside a task that was killed (the simulator's cancellation).

    A BaseException, like ``trio.Cancelled``, so handlers that catch
    ``Exception`` cannot swallow it."""


class ForeignAwait(RuntimeError):
    """A simulated task awaited something that is not the kernel's trap."""


class KernelError(RuntimeError):
    """A task ended with an exception the runtime did not handle (a bug)."""


class _Park:
    __slots__ = ()


_PARK: Final = _Park()


class _ParkAwaitable:
    __slots__ = ()

    def __await__(self) -> Generator[_Park, Any, Any]:
        return (yield _PARK)


park: Final = _ParkAwaitable()
"""``await park`` suspends the current task until the kernel reschedules it."""


class _Event:
    __slots__ = ("args", "cancelled", "fn")

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SimTask:
    """One coroutine driven by the kernel."""

    __slots__ = (
        "_kernel",
        "coro",
        "done",
        "name",
        "on_abort",
        "parked",
        "pending_throw",
        "started",
    )

    def __init__(self, kernel: Kernel, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._kernel = kernel
        self.coro = coro
        self.name = name
        self.done = False
        self.parked = False
        self.started = False
        self.on_abort: Callable[[], None] | None = None
        self.pending_throw: BaseException | None = None

    def kill(self) -> None:
        self.throw_in(SimKilled())

    def throw_in(self, exc: BaseException) -> None:
        """Raise ``exc`` inside the task at its suspension point (now if it is
        parked, else when it next runs)."""
        if self.done:
            return
        if self.parked:
            abort, self.on_abort = self.on_abort, None
            if abort is not None:
                abort()
            self._kernel.reschedule(self, None, exc)
        elif self.pending_throw is None:
            self.pending_throw = exc


class Kernel:
    """Virtual time and the event queue."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events = 0
        self.current: SimTask | None = None
        self._queue: list[tuple[float, int, _Event]] = []
        self._seq = 0

    # ------------------------------------------------------------ events

    def call_at(self, when: float, fn: Callable[..., object], *args: Any) -> _Event:
        event = _Event(fn, args)
        heapq.heappush(self._queue, (max(when, self.now), self._seq, event))
        self._seq += 1
        return event

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> _Event:
        return self.call_at(self.now + max(0.0, delay), fn, *args)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> _Event:
        return self.call_at(self.now, fn, *args)

    # ------------------------------------------------------------- tasks

    def spawn(self, coro: Coroutine[Any, Any, None], name: str = "task") -> SimTask:
        task = SimTask(self, coro, name)
        self.call_soon(self._step, task, None, None)
        return task

    def reschedule(
        self, task: SimTask, value: object = None, exc: BaseException | None = None
    ) -> None:
        task.parked = False
        task.on_abort = None
        self.call_soon(self._step, task, value, exc)

    def _step(self, task: SimTask, value: object, exc: BaseException | None) -> None:
        if task.done:
            return
        if not task.started:
            # A coroutine that never ran cannot run its ``finally`` blocks if
            # something is thrown into it (``throw`` on an unstarted coroutine
            # raises at once, outside its body). Like a trio task cancelled
            # before it first ran, it runs to its first suspension and a kill
            # or injected fault is delivered there (below), so an actor killed
            # right after spawn still does its exit bookkeeping.
            task.started = True
        elif task.pending_throw is not None and exc is None:
            exc, task.pending_throw = task.pending_throw, None
        self.current = task
        try:
            trap = task.coro.throw(exc) if exc is not None else task.coro.send(value)
        except (StopIteration, SimKilled):
            task.done = True
            return
        except BaseException as error:
            task.done = True
            raise KernelError(f"task {task.name} ended with {type(error).__name__}") from error
        finally:
            self.current = None
        if trap is _PARK:
            task.parked = True
            if task.pending_throw is not None:
                # Killed while it was running: deliver at this suspension.
                pending, task.pending_throw = task.pending_throw, None
                task.throw_in(pending)
        else:
            self.call_soon(self._step, task, None, ForeignAwait("awaited a non-simulator object"))

    # --------------------------------------------------------------- run

    def run(self, *, until: float | None = None, max_events: int | None = None) -> bool:
        """Run events in order; stop when none are left (returns True), or at
        virtual time ``until`` or after ``max_events`` (returns False)."""
        queue = self._queue
        budget = max_events if max_events is not None else -1
        while queue:
            when, _seq, event = queue[0]
            if until is not None and when > until:
                self.now = until
                return False
            if budget == 0:
                return False
            heapq.heappop(queue)
            if event.cancelled:
                continue
            self.now = when
            self.events += 1
            budget -= 1
            event.fn(*event.args)
        return True

    def run_main(
        self, main: Callable[[], Coroutine[Any, Any, Any]], *, until: float | None = None
    ) -> Any:
        """Run ``main()`` as a task until it returns; its result (or exception)
        is returned (raised). Other tasks keep their state in the kernel."""
        box: dict[str, Any] = {}

        async def wrapper() -> None:
            try:
                box["value"] = await main()
            except Exception as error:
                box["error"] = error

        self.spawn(wrapper(), "main")
        queue = self._queue
        while "value" not in box and "error" not in box:
            if not queue:
                raise KernelError("main is blocked forever: no events left")
            if until is not None and queue[0][0] > until:
                raise KernelError(f"main did not finish by virtual time {until}")
            self.run(max_events=1)
        if "error" in box:
            raise box["error"]
        return box.get("value")


class SimWaiter:
    """The Driver's Waiter on the kernel: park the current task, resume it on
    :meth:`wake` or when the virtual-time timeout fires."""

    __slots__ = ("_kernel", "_task", "_timer")

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._task: SimTask | None = None
        self._timer: _Event | None = None

    async def wait(self, timeout: float | None) -> object:
        task = self._kernel.current
        if task is None:
            raise KernelError("a waiter was awaited outside a simulated task")
        self._task = task
        task.on_abort = self._abort
        if timeout is not None:
            self._timer = self._kernel.call_later(timeout, self._expire)
        return await park

    def _abort(self) -> None:
        self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        task = self._task
        self._timer = None
        if task is not None:
            self._task = None
            self._kernel.reschedule(task, TIMED_OUT)

    def wake(self, value: object = None) -> bool:
        task = self._task
        if task is None:
            return False
        self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._kernel.reschedule(task, value)
        return True
