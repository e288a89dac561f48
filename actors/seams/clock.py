"""The Clock seam: every reading of time and every sleep goes through it.

Real nodes use :class:`TrioClock`; the simulator substitutes virtual time, so
the same actor code runs unchanged and a seed reproduces a whole run.
"""

from __future__ import annotations

import time
from typing import Protocol

import trio


class WallClock(Protocol):
    """The part of the Clock seam that components without timers read: wall time
    (a TPM's document timestamps, a log's tree-head timestamps)."""

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch (for attestation timestamps, expiry)."""
        ...


class Clock(WallClock, Protocol):
    """Time as actors see it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for timeouts, intervals)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...


class TrioClock:
    """Production clock: trio's monotonic clock and the system's wall clock."""

    def monotonic(self) -> float:
        return trio.current_time()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)
