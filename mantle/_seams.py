"""The client's real seams: the operating system's CSPRNG and wall clock.

The client is a composition root of its own (it runs on the customer's
machine, without ``nodes``): these are the only places it reads randomness and
wall time; everything else takes them injected (tests pass simulated ones).
"""

from __future__ import annotations

import secrets
import time


class SystemRandom:
    """The Random seam: the operating system's CSPRNG."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)

    def random(self) -> float:
        # 53 random bits, the precision of a double's mantissa.
        return secrets.randbits(53) / (1 << 53)


class SystemClock:
    """The WallClock seam: the operating system's wall time."""

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000
