"""The Random seam: every random draw an actor makes goes through it.

Production uses the operating system's CSPRNG (:class:`nodes.random.SystemRandom`). The
simulator substitutes one seeded generator per run that records every draw, so
a seed reproduces the run. Nothing in a production path may take randomness
from anywhere else, and nothing may use a seeded generator in production.
"""

from __future__ import annotations

from typing import Protocol


class Random(Protocol):
    """Randomness as actors see it."""

    def token_bytes(self, n: int) -> bytes:
        """``n`` uniformly random bytes (keys, nonces, Noise ephemerals)."""
        ...

    def randbelow(self, n: int) -> int:
        """A uniformly random integer in ``[0, n)``; ``n`` must be positive."""
        ...

    def random(self) -> float:
        """A uniformly random float in ``[0.0, 1.0)`` (jitter, backoff)."""
        ...
