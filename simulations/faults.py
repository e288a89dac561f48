"""Fault injection for the simulator: actor crashes and network partitions.

Faults are drawn from the run's single recorded PRNG and scheduled on the
kernel, so a seed fixes which actor crashes when, and when the network
splits and heals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from actors import ActorRef, ActorSystem
from simulations.kernel import Kernel, SimTask
from simulations.network import SimNetwork
from simulations.random import RecordedRandom
from simulations.trace import TraceRecorder


class InjectedCrash(Exception):
    """Raised inside an actor by the fault injector (an Exception, so it is a
    crash like any handler failure, not a kill)."""


class FaultInjector:
    def __init__(
        self,
        kernel: Kernel,
        rng: RecordedRandom,
        trace: TraceRecorder,
        systems: Sequence[ActorSystem],
    ) -> None:
        self._kernel = kernel
        self._rng = rng
        self._trace = trace
        self._systems = {system.node: system for system in systems}
        self.crashes_injected = 0
        self.partitions = 0

    def schedule_partition(
        self, network: SimNetwork, groups: Sequence[Sequence[str]], start: float, end: float
    ) -> None:
        """Split the network into ``groups`` at ``start`` and heal it at ``end``."""
        if end <= start:
            raise ValueError("a partition must heal after it starts")

        def split() -> None:
            self.partitions += 1
            network.partition(groups)

        self._kernel.call_at(start, split)
        self._kernel.call_at(end, network.heal)

    def crash_actors(
        self,
        rate: float,
        candidates: Callable[[], Sequence[ActorRef]],
        keep_going: Callable[[], bool],
    ) -> None:
        """Crash a random candidate actor at exponentially distributed
        intervals (``rate`` per virtual second) while ``keep_going()``."""
        if rate <= 0:
            return

        def next_crash() -> None:
            if not keep_going():
                return
            refs = candidates()
            if refs:
                victim = refs[self._rng.randbelow(len(refs))]
                task = self._systems[victim.node].task_of(victim)
                if isinstance(task, SimTask):
                    self.crashes_injected += 1
                    self._trace.record("fault.crash", victim.node, victim.actor_id)
                    task.throw_in(InjectedCrash())
            self._kernel.call_later(self._rng.exponential(1.0 / rate), next_crash)

        self._kernel.call_later(self._rng.exponential(1.0 / rate), next_crash)
