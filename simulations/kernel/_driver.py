"""The actor runtime's Driver on the simulation kernel (virtual time)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from actors._core._driver import TaskHandle, TimerHandle, Waiter
from actors.seams.clock import Clock
from simulations.clock import VirtualClock
from simulations.kernel._loop import Kernel, SimKilled, SimWaiter


class SimDriver:
    """Runs actors as kernel tasks; time is the kernel's virtual clock."""

    killed: tuple[type[BaseException], ...] = (SimKilled,)

    def __init__(self, kernel: Kernel, clock: VirtualClock | None = None) -> None:
        self.kernel = kernel
        self.clock: Clock = clock if clock is not None else VirtualClock(kernel)

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
