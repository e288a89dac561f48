"""The simulated network under the real remote-messaging layer: partitions
and healing, loss, duplication and reordering."""

from __future__ import annotations

import dataclasses

from actors import (
    Actor,
    ActorSystem,
    AskTimeout,
    Context,
    Down,
    ExitKind,
    NotSendable,
    PeerUnavailable,
)
from actors.remote import RemoteLayer
from protocol.messages import MAX_ENVELOPE_SIZE, U64, Ping, Pong, message
from simulations.kernel import Kernel, SimDriver
from simulations.network import Fixed, LinkProfile, SimNetwork, Uniform
from simulations.random import RecordedRandom
from simulations.trace import TraceRecorder


@message("test.simnet.seq")
@dataclasses.dataclass(frozen=True, slots=True)
class Seq:
    n: U64


@message("test.simnet.blob")
@dataclasses.dataclass(frozen=True, slots=True)
class Blob:
    data: bytes


# Fits an envelope on its own, but not inside the remote frame around it.
_NEAR_LIMIT = MAX_ENVELOPE_SIZE - 32


class Echo(Actor):
    def __init__(self, seen: list[int] | None = None):
        self.seen = seen if seen is not None else []

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Ping):
            return Pong(message.nonce)
        if isinstance(message, Seq):
            self.seen.append(message.n)
        if isinstance(message, Blob):
            return Blob(bytes(_NEAR_LIMIT))
        return None


class Watch(Actor):
    def __init__(self, downs: list[Down]):
        self.downs = downs

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Down):
            self.downs.append(message)
            return None
        return ctx.monitor(message)  # type: ignore[arg-type]


def _cluster(
    nodes: list[str], profile: LinkProfile | None = None, seed: int = 1
) -> tuple[Kernel, SimNetwork, dict[str, ActorSystem]]:
    kernel = Kernel()
    trace = TraceRecorder(lambda: kernel.now)
    rng = RecordedRandom(seed, trace)
    network = SimNetwork(kernel, rng, trace, default=profile, detect_after=0.2)
    systems = {}
    for node in nodes:
        system = ActorSystem(node, SimDriver(kernel), random=rng)
        RemoteLayer(system, network.endpoint(node))
        systems[node] = system
    return kernel, network, systems


def test_partition_and_heal() -> None:
    kernel, network, systems = _cluster(["a", "b", "c"])
    a, b = systems["a"], systems["b"]
    downs: list[Down] = []
    outcomes: list[str] = []

    async def main() -> None:
        b.spawn(Echo(), name="echo")
        echo = a.ref("b", "echo")
        assert await echo.ask(Ping(1), 1.0) == Pong(1)
        watcher = a.spawn(Watch(downs))
        await watcher.ask(b.whereis("echo"), 1.0)

        network.partition([["a"], ["b", "c"]])
        # Before the loss is detected, frames vanish: the ask times out.
        try:
            await echo.ask(Ping(2), 0.1)
        except AskTimeout:
            outcomes.append("timeout")
        await a.clock.sleep(0.2)
        # Detected: monitors fire noconnection, new asks fail fast.
        assert [d.reason.kind for d in downs] == [ExitKind.NOCONNECTION]
        try:
            await echo.ask(Ping(3), 1.0)
        except PeerUnavailable:
            outcomes.append("unavailable")
        # b and c still talk to each other.
        c_echo = systems["c"].spawn(Echo(), name="echo")
        assert await b.ref("c", "echo").ask(Ping(4), 1.0) == Pong(4)
        assert c_echo is not None

        network.heal()
        for _ in range(100):
            await a.clock.sleep(0.05)
            if network.is_connected("a", "b"):
                break
        assert await echo.ask(Ping(5), 1.0) == Pong(5)

    kernel.run_main(main, until=60.0)
    kernel.run(until=kernel.now + 30.0)  # let a-c finish redialling too
    assert outcomes == ["timeout", "unavailable"]
    stats = network.stats
    assert stats.partitions == 1 and stats.heals == 1
    assert stats.links_lost == 2 and stats.links_restored == 2  # a-b and a-c


def test_loss_duplication_and_reordering() -> None:
    def run(profile: LinkProfile) -> tuple[list[int], SimNetwork]:
        kernel, network, systems = _cluster(["a", "b"], profile)
        seen: list[int] = []

        async def main() -> None:
            systems["b"].spawn(Echo(seen), name="echo")
            echo = systems["a"].ref("b", "echo")
            for n in range(200):
                echo.tell(Seq(n))
            await systems["a"].clock.sleep(5.0)

        kernel.run_main(main)
        return seen, network

    clean, _ = run(LinkProfile(latency=Fixed(0.001)))
    assert clean == list(range(200))
    lossy, net = run(LinkProfile(latency=Fixed(0.001), loss=0.3))
    assert 80 < len(lossy) < 180 and net.stats.lost == 200 - len(lossy)
    doubled, net = run(LinkProfile(latency=Uniform(0.001, 0.002), duplicate=1.0))
    assert sorted(doubled) == sorted(list(range(200)) * 2)
    shuffled, net = run(
        LinkProfile(latency=Fixed(0.001), reorder=0.2, reorder_delay=Uniform(0.005, 0.05))
    )
    assert sorted(shuffled) == list(range(200)) and shuffled != list(range(200))
    assert net.stats.reordered > 0


def test_frame_over_the_size_bound_is_a_typed_error_and_the_ask_still_ends() -> None:
    kernel, _network, systems = _cluster(["a", "b"], LinkProfile(latency=Fixed(0.001)))

    async def main() -> None:
        systems["b"].spawn(Echo(), name="echo")
        echo = systems["a"].ref("b", "echo")
        # Outgoing: refused with the runtime's typed error, not a codec error.
        try:
            echo.tell(Blob(bytes(_NEAR_LIMIT)))
        except NotSendable:
            pass
        else:
            raise AssertionError("an oversized tell was accepted")
        # Incoming reply too large for its frame: the asker gets NotSendable
        # (not a timeout) and the replying actor keeps serving.
        try:
            await echo.ask(Blob(b""), 1.0)
        except NotSendable:
            pass
        else:
            raise AssertionError("an oversized reply was delivered")
        assert await echo.ask(Ping(7), 1.0) == Pong(7)

    kernel.run_main(main)
    assert systems["b"].stats.crashes == 0
