"""The actor runtime's Driver on the simulation kernel (virtual time)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from actors.lowlevel import TaskHandle, TimerHandle, Waiter
from actors.seams.clock import Clock
from simulations.kernel._loop import Kernel, SimKilled, SimWaiter

if TYPE_CHECKING:
    from simulations.clock import VirtualClock


class SimDriver:
    """Runs actors as kernel tasks; time is the kernel's virtual clock."""

    killed: tuple[type[BaseException], ...] = (SimKilled,)

    def __init__(self, kernel: Kernel, clock: VirtualClock | None = None) -> None:
        self.kernel = kernel
        if clock is None:
            # Imported here: simulations.clock imports this package's event
            # loop, so a module-level import is a cycle whenever
            # simulations.clock is the first of the two to be imported.
            from simulations.clock import VirtualClock

            clock = VirtualClock(kernel)
        self.clock: Clock = clock

    def new_waiter(self) -> Waiter:
        return SimWaiter(self.kernel)

    async def checkpoint(self) -> None:
        # Through a waiter, so that a kill while queued here is handled by
        # the waiter's abort like any other suspension.
        waiter = SimWaiter(self.kernel)
        self.kernel.call_soon(waiter.wake)
        await waiter.wait(None)

    def start(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> TaskHandle:
        return self.kernel.spawn(fn(), "actor")

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.kernel.call_later(delay, callback)
