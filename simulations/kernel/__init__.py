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

# Last: the workload composes the simulator's network, faults and checkers,
# which import the kernel's names above.
from simulations.kernel._workload import KernelConfig, run_kernel_workload

__all__ = [
    "ForeignAwait",
    "Kernel",
    "KernelConfig",
    "KernelError",
    "SimDriver",
    "SimKilled",
    "SimTask",
    "SimWaiter",
    "park",
    "run_kernel_workload",
]
