"""Reconnect backoff, shared by the TCP transport and the simulated network
so that both reconnect on the same schedule."""

from __future__ import annotations

from dataclasses import dataclass

from actors.seams.random import Random


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt ``n`` (from 0) waits
    ``min(maximum, initial * factor**n)`` scaled by a random factor in
    ``[1 - jitter, 1]``, so that peers cut off together do not redial in step."""

    initial: float = 0.05
    factor: float = 2.0
    maximum: float = 5.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.maximum < self.initial:
            raise ValueError("backoff needs initial > 0, factor >= 1, maximum >= initial")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be in [0, 1]")

    def delay(self, attempt: int, random: Random) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * (1.0 - self.jitter * random.random())
