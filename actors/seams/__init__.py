"""Seams: one narrow ``typing.Protocol`` per effect (ARCHITECTURE §3).

Actor code takes these by injection. ``nodes/`` wires the real
implementations, ``simulations/`` the deterministic ones.
"""

from actors.seams.clock import Clock, TrioClock
from actors.seams.random import Random, SystemRandom
from actors.seams.tpm import TPM, TPMError

__all__ = ["TPM", "Clock", "Random", "SystemRandom", "TPMError", "TrioClock"]
