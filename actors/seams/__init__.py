"""Seams: one narrow ``typing.Protocol`` per effect (docs/architecture.md §4).

Only the Protocols live here. Actor code takes them by injection; ``nodes/``
holds the real implementations (``nodes.clock``, ``nodes.random``,
``nodes.store``, ``nodes.tcp_transport``, ``nodes.tpm``, ``nodes.engines``),
``simulations/`` the deterministic ones.
"""

from actors.seams.clock import Clock, WallClock
from actors.seams.engine import CancelToken, Chunk, Engine, GenerationParams
from actors.seams.random import Random
from actors.seams.store import Row, SqlValue, Store, StoreError
from actors.seams.tpm import TPM, CounterMismatch, CounterMissing, TPMError
from actors.seams.transport import Transport, TransportEvents

__all__ = [
    "TPM",
    "CancelToken",
    "Chunk",
    "Clock",
    "CounterMismatch",
    "CounterMissing",
    "Engine",
    "GenerationParams",
    "Random",
    "Row",
    "SqlValue",
    "Store",
    "StoreError",
    "TPMError",
    "Transport",
    "TransportEvents",
    "WallClock",
]
