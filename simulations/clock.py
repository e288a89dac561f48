"""Test and simulated time (the Clock seam): :class:`VirtualClock` on the
simulator kernel's virtual time, :class:`ManualClock` for tools and tests that
move time by hand."""

from __future__ import annotations

from simulations.kernel import Kernel, SimWaiter

# A fixed wall-clock origin (2025-01-01T00:00:00Z) so that wall_ms is a
# function of the seed, not of when the run happened.
SIM_EPOCH_MS = 1_735_689_600_000


class VirtualClock:
    """The Clock seam on the kernel's virtual time. ``skew`` offsets this
    node's wall clock (fault injection: clock skew)."""

    def __init__(self, kernel: Kernel, *, epoch_ms: int = SIM_EPOCH_MS, skew: float = 0.0) -> None:
        self._kernel = kernel
        self._epoch_ms = epoch_ms
        self.skew = skew

    def monotonic(self) -> float:
        return self._kernel.now

    def wall_ms(self) -> int:
        return self._epoch_ms + int((self._kernel.now + self.skew) * 1000)

    async def sleep(self, seconds: float) -> None:
        await SimWaiter(self._kernel).wait(max(0.0, seconds))


class ManualClock:
    """The Clock seam on time that moves only when told (for tools and tests):
    ``advance`` and ``sleep`` move it; nothing else does."""

    def __init__(self, start_ms: int) -> None:
        self._now_ms = start_ms

    def wall_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._now_ms / 1000

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now_ms += round(seconds * 1000)
