"""The Clock seam: every reading of time and every sleep goes through it.

Real nodes use :class:`nodes.clock.TrioClock`; the simulator substitutes
virtual time (:mod:`simulations.clock`), so the same actor code runs unchanged
and a seed reproduces a whole run.
"""

from __future__ import annotations

from typing import Protocol


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
