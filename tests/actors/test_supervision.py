"""Supervision semantics as a table: strategy x restart type x how the child
ended, plus intensity escalation, start order, shutdown order and timeouts.
Every case runs on the trio driver and on the simulation kernel."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from actors import (
    NORMAL,
    SHUTDOWN,
    Actor,
    ActorCrashed,
    ActorSystem,
    ChildSpec,
    Context,
    Down,
    ExitKind,
    ExitReason,
    Restart,
    Strategy,
    Supervisor,
    WhichChildren,
)

Log = list[tuple[Any, ...]]


class Probe(Actor):
    """Records its lifecycle; ends on command (crash, normal, shutdown)."""

    def __init__(self, child_id: str, log: Log, *, linger: float = 0.0, fail_start: bool = False):
        self.child_id = child_id
        self.log = log
        self.linger = linger
        self.fail_start = fail_start

    async def started(self, ctx: Context) -> None:
        if self.fail_start:
            raise RuntimeError("cannot start")
        self.log.append(("start", self.child_id))

    async def receive(self, ctx: Context, message: object) -> object:
        if message == "crash":
            raise RuntimeError("boom")
        if message == "normal":
            ctx.stop(NORMAL)
        elif message == "shutdown":
            ctx.stop(SHUTDOWN)
        return "pong"

    async def stopping(self, ctx: Context, reason: ExitReason) -> None:
        self.log.append(("stop", self.child_id, reason.kind.value))
        if self.linger:
            await ctx.clock.sleep(self.linger)
            self.log.append(("stopped", self.child_id))


class Watcher(Actor):
    """Monitors refs it is told about and records the Downs."""

    def __init__(self, downs: list[Down]):
        self.downs = downs

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Down):
            self.downs.append(message)
            return None
        if isinstance(message, tuple) and message[0] == "monitor":
            return ctx.monitor(message[1])
        return None


def _specs(log: Log, restart: Restart, **kwargs: Any) -> list[ChildSpec]:
    def factory(child_id: str):
        return lambda: Probe(child_id, log, **kwargs)

    return [ChildSpec(c, factory(c), restart, 1.0, name=c) for c in ("a", "b", "c")]


async def _eventually(system: ActorSystem, condition: Any, timeout: float = 10.0) -> None:
    deadline = system.clock.monotonic() + timeout
    while not condition():
        assert system.clock.monotonic() < deadline, "condition not reached in time"
        await system.clock.sleep(0.005)


async def _children(system: ActorSystem, sup: Any) -> dict[str, Any]:
    return dict(await sup.ask(WhichChildren(), 5.0))


EXPECTED_RESTARTED = {
    Strategy.ONE_FOR_ONE: ["b"],
    Strategy.ONE_FOR_ALL: ["a", "b", "c"],
    Strategy.REST_FOR_ONE: ["b", "c"],
}


def _restarts(restart: Restart, ending: str) -> bool:
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return ending == "crash"
    return False


CASES = list(itertools.product(list(Strategy), list(Restart), ["crash", "normal", "shutdown"]))


@pytest.mark.parametrize(
    ("strategy", "restart", "ending"), CASES, ids=lambda v: getattr(v, "value", v)
)
def test_restart_table(run_actors, strategy: Strategy, restart: Restart, ending: str) -> None:
    log: Log = []

    async def scenario(system: ActorSystem) -> None:
        sup = system.spawn(Supervisor(_specs(log, restart), strategy=strategy, intensity=5))
        assert await system.wait_started(sup)
        assert log == [("start", "a"), ("start", "b"), ("start", "c")]
        before = await _children(system, sup)
        log.clear()
        b = before["b"]
        if ending == "crash":
            with pytest.raises(ActorCrashed):
                await b.ask("crash", 5.0)
        else:
            await b.ask(ending, 5.0)
        assert await system.wait_terminated(b, 5.0)
        after = await _children(system, sup)

        if _restarts(restart, ending):
            restarted = EXPECTED_RESTARTED[strategy]
            # Siblings go down in reverse start order, then all come back in order.
            siblings = [c for c in reversed(restarted) if c != "b"]
            stops = [e for e in log if e[0] == "stop" and e[1] != "b"]
            assert stops == [("stop", c, "shutdown") for c in siblings]
            assert [e for e in log if e[0] == "start"] == [("start", c) for c in restarted]
            for child in ("a", "b", "c"):
                if child in restarted:
                    assert after[child] is not None and after[child] != before[child]
                    assert system.whereis(child) == after[child]
                else:
                    assert after[child] == before[child]
        else:
            assert [e for e in log if e[0] == "start"] == []
            assert after["a"] == before["a"] and after["c"] == before["c"]
            if restart is Restart.TEMPORARY:
                assert "b" not in after  # a temporary child's spec is dropped
            else:
                assert after["b"] is None  # transient, ended in order: kept, not running
            assert system.whereis("b") is None
        assert system.stats.escalations == 0

    run_actors(scenario)


def test_intensity_escalates_to_parent(run_actors) -> None:
    log: Log = []
    downs: list[Down] = []

    async def scenario(system: ActorSystem) -> None:
        inner_spec = ChildSpec(
            "inner",
            lambda: Supervisor(
                [ChildSpec("w", lambda: Probe("w", log), name="w")], intensity=2, period=60.0
            ),
            shutdown=None,
            name="inner",
        )
        root = system.spawn(Supervisor([inner_spec], intensity=1, period=60.0), name="root")
        watcher = system.spawn(Watcher(downs))
        await system.wait_started(root)
        await watcher.ask(("monitor", root), 5.0)
        first_inner = system.whereis("inner")
        w = system.ref("t", "w")

        async def crash_w(*, restarts: int | None = None) -> None:
            with pytest.raises(ActorCrashed):
                await w.ask("crash", 5.0)
            if restarts is not None:
                # Wait for the restart itself, not a fixed time: the trio run
                # shares a loaded machine.
                await _eventually(
                    system,
                    lambda: system.stats.restarts == restarts and system.whereis("w") is not None,
                )

        # Two crashes are within the inner supervisor's intensity...
        await crash_w(restarts=1)
        await crash_w(restarts=2)
        assert system.whereis("inner") == first_inner
        assert system.stats.escalations == 0
        # ...the third is not: inner gives up, root restarts inner (and w).
        await crash_w(restarts=3)
        assert system.stats.escalations == 1
        second_inner = system.whereis("inner")
        assert second_inner is not None and second_inner != first_inner
        assert await w.ask("ping", 5.0) == "pong"
        # Root allows one restart per period: the next escalation takes it down.
        await crash_w(restarts=4)
        await crash_w(restarts=5)
        await crash_w()
        await _eventually(system, lambda: system.whereis("root") is None and len(downs) == 1)
        assert system.stats.escalations == 3
        assert [d.reason.kind for d in downs] == [ExitKind.ESCALATED]
        assert system.live_actors() == [watcher]

    run_actors(scenario)


def test_restarts_outside_the_period_do_not_count(run_actors) -> None:
    log: Log = []

    async def scenario(system: ActorSystem) -> None:
        sup = system.spawn(
            Supervisor([ChildSpec("w", lambda: Probe("w", log), name="w")], intensity=1, period=0.1)
        )
        await system.wait_started(sup)
        for _ in range(4):
            with pytest.raises(ActorCrashed):
                await system.ref("t", "w").ask("crash", 5.0)
            await system.clock.sleep(0.15)
        assert system.is_alive(sup)
        assert system.stats.restarts == 4 and system.stats.escalations == 0

    run_actors(scenario)


def test_shutdown_reverse_order_with_timeouts(run_actors) -> None:
    log: Log = []
    downs: list[Down] = []

    async def scenario(system: ActorSystem) -> None:
        specs = [
            ChildSpec("a", lambda: Probe("a", log), shutdown=1.0, name="a"),
            ChildSpec("b", lambda: Probe("b", log, linger=0.01), shutdown=1.0, name="b"),
            ChildSpec("c", lambda: Probe("c", log, linger=30.0), shutdown=0.05, name="c"),
            ChildSpec("d", lambda: Probe("d", log), shutdown=0, name="d"),
        ]
        sup = system.spawn(Supervisor(specs))
        watcher = system.spawn(Watcher(downs))
        await system.wait_started(sup)
        for name in "abcd":
            await watcher.ask(("monitor", system.whereis(name)), 5.0)
        log.clear()
        started = system.clock.monotonic()
        system.stop(sup)
        assert await system.wait_terminated(sup, 10.0)
        elapsed = system.clock.monotonic() - started
        await system.clock.sleep(0.01)
        # d: brutal kill (no stopping hook); c: stopping overran its 0.05 s and
        # was cancelled; b: lingered briefly and finished; a: plain stop.
        assert log == [
            ("stop", "c", "shutdown"),
            ("stop", "b", "shutdown"),
            ("stopped", "b"),
            ("stop", "a", "shutdown"),
        ]
        kinds = {d.ref.name: d.reason.kind for d in downs}
        assert kinds == {
            "d": ExitKind.KILLED,
            "c": ExitKind.KILLED,
            "b": ExitKind.SHUTDOWN,
            "a": ExitKind.SHUTDOWN,
        }
        assert [d.ref.name for d in downs] == ["d", "c", "b", "a"]
        assert 0.05 <= elapsed < 5.0

    run_actors(scenario)


def test_failed_start_stops_started_children(run_actors) -> None:
    log: Log = []
    downs: list[Down] = []

    async def scenario(system: ActorSystem) -> None:
        specs = [
            ChildSpec("a", lambda: Probe("a", log), name="a"),
            ChildSpec("b", lambda: Probe("b", log, fail_start=True), name="b"),
            ChildSpec("c", lambda: Probe("c", log), name="c"),
        ]
        watcher = system.spawn(Watcher(downs))
        sup = system.spawn(Supervisor(specs))
        await watcher.ask(("monitor", sup), 5.0)
        assert not await system.wait_started(sup)
        await system.clock.sleep(0.01)
        assert log == [("start", "a"), ("stop", "a", "shutdown")]
        assert len(downs) == 1 and downs[0].reason.kind is ExitKind.CRASHED
        assert downs[0].reason.crash is not None
        assert downs[0].reason.crash.exc_type.endswith("SupervisorStartError")
        assert system.live_actors() == [watcher]

    run_actors(scenario)


def test_nested_tree_shuts_down_depth_first_in_reverse(run_actors) -> None:
    log: Log = []

    async def scenario(system: ActorSystem) -> None:
        def group(prefix: str) -> ChildSpec:
            kids = [
                ChildSpec(
                    f"{prefix}{i}", (lambda n=f"{prefix}{i}": Probe(n, log)), name=f"{prefix}{i}"
                )
                for i in (1, 2)
            ]
            return ChildSpec(prefix, lambda: Supervisor(kids), shutdown=None)

        root = system.spawn(Supervisor([group("x"), group("y")]))
        await system.wait_started(root)
        assert log == [("start", "x1"), ("start", "x2"), ("start", "y1"), ("start", "y2")]
        log.clear()
        system.stop(root)
        assert await system.wait_terminated(root, 5.0)
        assert log == [
            ("stop", "y2", "shutdown"),
            ("stop", "y1", "shutdown"),
            ("stop", "x2", "shutdown"),
            ("stop", "x1", "shutdown"),
        ]

    run_actors(scenario)


def test_a_restart_exactly_one_period_ago_still_counts() -> None:
    # OTP keeps restarts with ``now - t <= period``; virtual time makes the
    # tie exact, so this runs on the simulation kernel only.
    from simulations.kernel import Kernel, SimDriver
    from simulations.random import RecordedRandom
    from simulations.trace import TraceRecorder

    kernel = Kernel()
    system = ActorSystem(
        "t", SimDriver(kernel), random=RecordedRandom(0, TraceRecorder(lambda: kernel.now))
    )
    log: Log = []

    async def scenario() -> None:
        sup = system.spawn(
            Supervisor([ChildSpec("w", lambda: Probe("w", log), name="w")], intensity=1, period=1.0)
        )
        assert await system.wait_started(sup)
        with pytest.raises(ActorCrashed):
            await system.ref("t", "w").ask("crash", 5.0)
        await system.clock.sleep(1.0)
        with pytest.raises(ActorCrashed):
            await system.ref("t", "w").ask("crash", 5.0)
        assert await system.wait_terminated(sup, 5.0)
        assert system.stats.restarts == 1 and system.stats.escalations == 1

    kernel.run_main(scenario)
