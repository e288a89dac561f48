"""Attack: watch an actor under the monitor id another node already uses,
so that node never learns the actor died.

Monitor ids are drawn per node, and on the base code the watched actor kept
its remote watchers in a map keyed by the id alone: a second node monitoring
the same actor with the same id (any node can: ids count up from 1) replaced
the first node's entry, and only the second node got ``Down``. The scheduler
relies on ``Down`` to end or retry the requests of a scheduler that died; an
inference node whose ``Down`` was hidden kept generating for nobody. Now
watchers are keyed by their authenticated node and id, and both get it.
"""

from __future__ import annotations

from actors import Actor, ActorRef, ActorSystem, Context, Down, ExitKind
from actors.remote import RemoteLayer
from simulations.kernel import Kernel, SimDriver
from simulations.network import Fixed, LinkProfile, SimNetwork
from simulations.random import RecordedRandom
from simulations.trace import TraceRecorder


class Target(Actor):
    pass


class Watcher(Actor):
    """Monitors the ref it is asked to, answering the monitor id."""

    def __init__(self) -> None:
        self.downs: list[Down] = []

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Down):
            self.downs.append(message)
            return None
        assert isinstance(message, ActorRef)
        return ctx.monitor(message)


def test_a_second_nodes_monitor_with_the_same_id_does_not_hide_the_first_nodes_down() -> None:
    kernel = Kernel()
    trace = TraceRecorder(lambda: kernel.now)
    rng = RecordedRandom(5, trace)
    network = SimNetwork(kernel, rng, trace, default=LinkProfile(latency=Fixed(0.001)))
    systems = {}
    for node in ("target", "honest", "hostile"):
        systems[node] = ActorSystem(node, SimDriver(kernel), random=rng)
        RemoteLayer(systems[node], network.endpoint(node))
    honest, hostile = Watcher(), Watcher()

    async def main() -> None:
        target = systems["target"].spawn(Target(), name="target")
        remote = systems["honest"].ref("target", "target")
        honest_id = await systems["honest"].spawn(honest).ask(remote, 1.0)
        await systems["honest"].clock.sleep(0.01)
        hostile_id = await systems["hostile"].spawn(hostile).ask(remote, 1.0)
        assert honest_id == hostile_id  # the collision the attack needs
        await systems["hostile"].clock.sleep(0.01)
        systems["target"].kill(target)
        await systems["target"].clock.sleep(0.1)

    kernel.run_main(main, until=10.0)
    assert [d.reason.kind for d in hostile.downs] == [ExitKind.KILLED]
    assert [d.reason.kind for d in honest.downs] == [ExitKind.KILLED]
