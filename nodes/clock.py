"""The Clock seam on a real node: trio's monotonic clock and the system's wall clock."""

from __future__ import annotations

import time

import trio
import trio.from_thread


class TrioClock:
    """Production clock: trio's monotonic clock and the system's wall clock."""

    def monotonic(self) -> float:
        """Trio's clock, also from a worker thread of the same run (the key
        vault and the TPM work there, through the run-blocking seam)."""
        try:
            return trio.current_time()
        except RuntimeError:
            pass  # not the trio thread
        return trio.from_thread.run_sync(trio.current_time)

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)
