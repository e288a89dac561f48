"""Property test: a supervisor against a reference model of OTP semantics.

Hypothesis draws a strategy, an intensity, children with restart types, and
a sequence of child endings (crash or normal exit). The supervisor runs on
the simulation kernel (fast and deterministic); after every ending, which
children run, which specs remain, and whether the supervisor gave up must
match the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import (
    NORMAL,
    Actor,
    ActorCrashed,
    ActorError,
    ActorSystem,
    ChildSpec,
    Context,
    Restart,
    Strategy,
    Supervisor,
    WhichChildren,
)
from simulations.kernel import Kernel, SimDriver
from simulations.random import RecordedRandom
from simulations.trace import TraceRecorder


class Child(Actor):
    async def receive(self, ctx: Context, message: object) -> object:
        if message == "crash":
            raise RuntimeError("crash")
        if message == "normal":
            ctx.stop(NORMAL)
        return None


@dataclass
class Model:
    strategy: Strategy
    intensity: int
    specs: list[tuple[str, Restart]]
    running: dict[str, bool] = field(default_factory=dict)
    restarts: int = 0
    gave_up: bool = False

    def __post_init__(self) -> None:
        self.running = {cid: True for cid, _ in self.specs}

    def end(self, cid: str, crashed: bool) -> None:
        ids = [c for c, _ in self.specs]
        position = ids.index(cid)
        restart = self.specs[position][1]
        self.running[cid] = False
        if restart is Restart.TEMPORARY:
            del self.specs[position]
            del self.running[cid]
            return
        if restart is Restart.TRANSIENT and not crashed:
            return
        self.restarts += 1
        if self.restarts > self.intensity:
            self.gave_up = True
            self.specs.clear()
            self.running.clear()
            return
        if self.strategy is Strategy.ONE_FOR_ONE:
            affected = [cid]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            affected = ids
        else:
            affected = ids[position:]
        for other in affected:
            spec_restart = dict(self.specs)[other]
            if other != cid and spec_restart is Restart.TEMPORARY:
                self.specs = [s for s in self.specs if s[0] != other]
                del self.running[other]
            else:
                self.running[other] = True


restarts = st.sampled_from(list(Restart))


@settings(max_examples=150, deadline=None)
@given(
    strategy=st.sampled_from(list(Strategy)),
    intensity=st.integers(0, 4),
    kinds=st.lists(restarts, min_size=1, max_size=5),
    endings=st.lists(st.tuples(st.integers(0, 4), st.booleans()), max_size=12),
)
def test_supervisor_matches_model(
    strategy: Strategy,
    intensity: int,
    kinds: list[Restart],
    endings: list[tuple[int, bool]],
) -> None:
    specs = [(f"c{i}", kind) for i, kind in enumerate(kinds)]
    model = Model(strategy, intensity, list(specs))
    kernel = Kernel()
    system = ActorSystem(
        "m", SimDriver(kernel), random=RecordedRandom(0, TraceRecorder(lambda: kernel.now))
    )

    async def scenario() -> None:
        sup = system.spawn(
            Supervisor(
                [ChildSpec(cid, Child, kind, 1.0, name=cid) for cid, kind in specs],
                strategy=strategy,
                intensity=intensity,
                period=1e9,
            )
        )
        assert await system.wait_started(sup)
        for index, crashed in endings:
            if model.gave_up:
                break
            running = [cid for cid, up in model.running.items() if up]
            if not running:
                break
            cid = running[index % len(running)]
            ref = system.whereis(cid)
            assert ref is not None
            try:
                await ref.ask("crash" if crashed else "normal", 1.0)
            except ActorCrashed:
                assert crashed
            assert await system.wait_terminated(ref, 1.0)
            model.end(cid, crashed)
            try:
                children = await sup.ask(WhichChildren(), 1.0)
            except ActorError:
                assert model.gave_up
                assert not system.is_alive(sup)
                assert all(system.whereis(c) is None for c, _ in specs)
                continue
            assert not model.gave_up
            assert [cid for cid, _ in children] == [cid for cid, _ in model.specs]
            for child_id, child_ref in children:
                assert (child_ref is not None) == model.running[child_id]
                assert (system.whereis(child_id) is not None) == model.running[child_id]
        assert system.stats.restarts + system.stats.escalations == model.restarts

    kernel.run_main(scenario, until=1e6)
