"""The simulation kernel itself: virtual time, ordering, kills, and the rule
that simulated actors may await only what the kernel hands out."""

from __future__ import annotations

import asyncio

import pytest

from actors import Actor, ActorCrashed, ActorSystem, Context, Down, ExitKind
from simulations.clock import SIM_EPOCH_MS, VirtualClock
from simulations.kernel import ForeignAwait, Kernel, KernelError, SimDriver, SimKilled
from simulations.random import RecordedRandom
from simulations.trace import TraceRecorder


def _system(kernel: Kernel, node: str = "n") -> ActorSystem:
    trace = TraceRecorder(lambda: kernel.now)
    return ActorSystem(node, SimDriver(kernel), random=RecordedRandom(0, trace))


def test_virtual_time_and_fifo_ties() -> None:
    kernel = Kernel()
    clock = VirtualClock(kernel)
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        order.append((name, kernel.now))

    for name, seconds in [("late", 3600.0), ("a", 1.0), ("b", 1.0), ("zero", 0.0)]:
        kernel.spawn(sleeper(name, seconds), name)
    assert kernel.run() is True
    assert order == [("zero", 0.0), ("a", 1.0), ("b", 1.0), ("late", 3600.0)]
    assert clock.wall_ms() == SIM_EPOCH_MS + 3_600_000


def test_run_until_stops_at_the_horizon() -> None:
    kernel = Kernel()
    clock = VirtualClock(kernel)
    kernel.spawn(clock.sleep(10.0))
    assert kernel.run(until=5.0) is False
    assert kernel.now == 5.0
    assert kernel.run() is True
    assert kernel.now == 10.0


def test_kill_parked_and_running_tasks() -> None:
    kernel = Kernel()
    clock = VirtualClock(kernel)
    events: list[str] = []

    async def victim() -> None:
        try:
            await clock.sleep(100.0)
        except SimKilled:
            events.append(f"killed at {kernel.now}")
            raise

    task = kernel.spawn(victim())
    kernel.call_at(2.0, task.kill)
    kernel.run()
    assert events == ["killed at 2.0"] and task.done


class ForeignSleeper(Actor):
    async def receive(self, ctx: Context, message: object) -> object:
        await asyncio.sleep(0)  # not the Clock seam: must not escape virtual time
        return None


class Watch(Actor):
    def __init__(self, downs: list[Down]):
        self.downs = downs

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Down):
            self.downs.append(message)
            return None
        return ctx.monitor(message)  # type: ignore[arg-type]


def test_foreign_await_crashes_the_actor() -> None:
    kernel = Kernel()
    system = _system(kernel)
    downs: list[Down] = []

    async def main() -> None:
        ref = system.spawn(ForeignSleeper())
        watcher = system.spawn(Watch(downs))
        await watcher.ask(ref, 1.0)
        with pytest.raises(ActorCrashed) as caught:
            await ref.ask("go", 1.0)
        assert caught.value.report.exc_type.endswith("ForeignAwait")
        await system.clock.sleep(0.1)

    kernel.run_main(main)
    assert [d.reason.kind for d in downs] == [ExitKind.CRASHED]
    assert ForeignAwait.__name__ in downs[0].reason.crash.exc_type  # type: ignore[union-attr]


def test_main_blocked_forever_is_reported() -> None:
    kernel = Kernel()
    system = _system(kernel)

    async def main() -> None:
        await system.driver.new_waiter().wait(None)

    with pytest.raises(KernelError):
        kernel.run_main(main)


def test_kill_or_fault_before_first_step_still_ends_the_actor() -> None:
    # A kill (or an injected fault) that lands before the actor's task first
    # ran must still run the runtime's exit bookkeeping, as under trio: the
    # monitor fires, the name is freed, and the kernel itself keeps running.
    from simulations.faults import InjectedCrash

    kernel = Kernel()
    system = _system(kernel)
    downs: list[Down] = []
    watcher = system.spawn(Watch(downs))
    kernel.run()

    # Two monitored actors, and two that have not run at all yet; one of
    # each is killed and the other gets an injected fault, from outside any task.
    killed = system.spawn(Actor(), name="killed")
    faulted = system.spawn(Actor(), name="faulted")
    kernel.run_main(lambda: watcher.ask(killed, 1.0))
    kernel.run_main(lambda: watcher.ask(faulted, 1.0))
    fresh_kill = system.spawn(Actor(), name="fresh_kill")
    fresh_fault = system.spawn(Actor(), name="fresh_fault")
    system.kill(fresh_kill)
    task = system.task_of(fresh_fault)
    assert task is not None
    task.throw_in(InjectedCrash())
    system.kill(killed)
    system.task_of(faulted).throw_in(InjectedCrash())  # type: ignore[union-attr]
    assert kernel.run() is True
    for name in ("killed", "faulted", "fresh_kill", "fresh_fault"):
        assert system.whereis(name) is None
    assert system.live_actors() == [watcher]
    assert sorted(d.reason.kind.value for d in downs) == ["crashed", "killed"]
    assert system.stats.crashes == 2
