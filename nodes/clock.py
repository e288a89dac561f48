"""The Clock seam on a real node: trio's monotonic clock and the system's wall clock."""

from __future__ import annotations

import time

import trio


class TrioClock:
    """Production clock: trio's monotonic clock and the system's wall clock."""

    def monotonic(self) -> float:
        return trio.current_time()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)
