"""One seeded PRNG per simulation run, every draw recorded (the Random seam).

All randomness of a run (actors' draws through the seam, network latencies,
loss, faults, the workload) comes from this one generator, and every draw is
written to the trace, so two runs diverge in the trace at the first draw
that differs. ``random.Random`` (Mersenne Twister) seeded with an int is
stable across processes and platforms; it is *not* a CSPRNG, which is why
nothing outside the simulator may use this class.
"""

from __future__ import annotations

import math
import random as _random

from simulations.trace import TraceRecorder


class RecordedRandom:
    def __init__(self, seed: int, trace: TraceRecorder) -> None:
        self.seed = seed
        self._rng = _random.Random(seed)  # noqa: S311 - reproducibility is the point
        self._trace = trace
        self.draws = 0

    # -- the Random seam ------------------------------------------------------

    def token_bytes(self, n: int) -> bytes:
        value = self._rng.randbytes(n)
        self.draws += 1
        self._trace.record("draw.bytes", n, value)
        return value

    def randbelow(self, n: int) -> int:
        if n <= 0:
            raise ValueError("randbelow needs a positive bound")
        value = self._rng.randrange(n)
        self.draws += 1
        self._trace.record("draw.below", n, value)
        return value

    def random(self) -> float:
        value = self._rng.random()
        self.draws += 1
        self._trace.record("draw.float", value)
        return value

    # -- helpers built on recorded draws ---------------------------------------

    def chance(self, p: float) -> bool:
        """True with probability ``p`` (no draw when ``p`` is 0 or 1)."""
        if p <= 0.0:
            return False
        if p >= 1.0:
            return True
        return self.random() < p

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def exponential(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.random())

    def normal(self) -> float:
        # Box-Muller from two recorded uniform draws.
        u1 = 1.0 - self.random()
        u2 = self.random()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)

    def choice_index(self, n: int) -> int:
        return self.randbelow(n)
