"""Run an actor scenario on either driver: trio (production) or the
simulation kernel. Scenarios use only the runtime's API and the Clock seam,
so the same scenario, and the same actor and supervisor code, runs on both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from actors import ActorSystem, open_actor_system
from nodes.clock import TrioClock
from nodes.random import SystemRandom
from simulations.kernel import Kernel, SimDriver
from simulations.random import RecordedRandom
from simulations.trace import TraceRecorder

Scenario = Callable[[ActorSystem], Awaitable[Any]]


def run_on_trio(scenario: Scenario) -> Any:
    async def main() -> Any:
        async with open_actor_system(
            "t", random=SystemRandom(), clock=TrioClock(), shutdown_timeout=1.0
        ) as system:
            return await scenario(system)

    return trio.run(main)


def run_on_sim(scenario: Scenario) -> Any:
    kernel = Kernel()
    trace = TraceRecorder(lambda: kernel.now)
    system = ActorSystem("t", SimDriver(kernel), random=RecordedRandom(0, trace))
    return kernel.run_main(lambda: scenario(system), until=600.0)


@pytest.fixture(params=["trio", "sim"])
def run_actors(request: pytest.FixtureRequest) -> Callable[[Scenario], Any]:
    return run_on_trio if request.param == "trio" else run_on_sim
