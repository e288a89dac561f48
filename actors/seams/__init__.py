"""Seams: one narrow ``typing.Protocol`` per effect (ARCHITECTURE §3).

Actor code takes these by injection. ``nodes/`` wires the real
implementations, ``simulations/`` the deterministic ones.
"""

from actors.seams.clock import Clock, TrioClock
from actors.seams.random import Random, SystemRandom
from actors.seams.store import SqliteStore, Store, StoreError
from actors.seams.tpm import TPM, TPMError
from actors.seams.transport import Transport, TransportEvents

__all__ = [
    "TPM",
    "Clock",
    "Random",
    "SqliteStore",
    "Store",
    "StoreError",
    "SystemRandom",
    "TPMError",
    "Transport",
    "TransportEvents",
    "TrioClock",
]
