"""The Random seam on a real node: the operating system's CSPRNG."""

from __future__ import annotations

import secrets


class SystemRandom:
    """Production randomness: the operating system's CSPRNG."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)

    def random(self) -> float:
        # 53 random bits, the precision of a double's mantissa.
        return secrets.randbits(53) / (1 << 53)
