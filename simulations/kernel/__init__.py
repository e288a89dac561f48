"""The deterministic simulation kernel: an event loop in virtual time that
runs the real actor runtime, plus the built-in ``mantle-sim kernel`` workload."""

from simulations.kernel._driver import SimDriver
from simulations.kernel._loop import (
    ForeignAwait,
    Kernel,
    KernelError,
    SimKilled,
    SimTask,
    SimWaiter,
    park,
)

__all__ = [
    "ForeignAwait",
    "Kernel",
    "KernelError",
    "SimDriver",
    "SimKilled",
    "SimTask",
    "SimWaiter",
    "park",
]
