"""Remote messaging between two nodes over loopback TCP, every link a Noise
XX channel: tell and ask, remote monitors, a lost connection turning into
Down notifications and failed asks, reconnection, and refusing a peer that
cannot prove the configured key."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import pytest
import trio
from _node_attestation import Cloud, NodeAttestation

from actors import (
    Actor,
    ActorCrashed,
    ActorSystem,
    Context,
    Down,
    ExitKind,
    NotSendable,
    PeerUnavailable,
    TrioDriver,
)
from actors.lowlevel import Backoff
from actors.remote import RemoteLayer
from nodes.clock import TrioClock
from nodes.random import SystemRandom
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.framing import DEFAULT_MAX_PAYLOAD
from protocol.messages import U64, MaxLen, Ping, Pong, message
from protocol.noise import KeyPair, NoiseProtocol

pytestmark = pytest.mark.anyio

DH = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s").dh
CANARY = "CANARY-remote-93b1"
FAST = Backoff(initial=0.02, factor=2.0, maximum=0.1, jitter=0.5)
CLOUD = Cloud("test-remote")


@message("test.remote.note")
@dataclasses.dataclass(frozen=True, slots=True)
class Note:
    seq: U64
    text: Annotated[str, MaxLen(64)]


class Echo(Actor):
    def __init__(self, notes: list[Note] | None = None):
        self.notes = notes if notes is not None else []

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Ping):
            return Pong(message.nonce + 1)
        if isinstance(message, Note):
            self.notes.append(message)
            if message.text.startswith("crash"):
                raise RuntimeError(message.text)
            if message.text == "slow":
                await ctx.clock.sleep(30)
        return None


class Watcher(Actor):
    def __init__(self, downs: list[Down]):
        self.downs = downs

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Down):
            self.downs.append(message)
            return None
        return ctx.monitor(message)  # type: ignore[arg-type]


class Node:
    def __init__(
        self, name: str, attestation: NodeAttestation | None = None, port: int = 0
    ) -> None:
        self.name = name
        # A restarted node may come back with its custody (and so its key).
        self.attestation = attestation if attestation is not None else CLOUD.node(name)
        self.key = key = self.attestation.static
        self.random = SystemRandom()
        self.transport = TcpNoiseTransport(
            name,
            static=key,
            random=self.random,
            peers={},
            attest=self.attestation.service.attest,
            verify_attestation=self.attestation.verifier,
            listen_port=port,
            backoff=FAST,
        )
        self.system: ActorSystem | None = None
        self.scope = trio.CancelScope()

    async def start(self, nursery: trio.Nursery) -> int:
        async def run(task_status: trio.TaskStatus[int]) -> None:
            with self.scope:
                async with trio.open_nursery() as inner:
                    port = await inner.start(self.transport.run)
                    self.system = ActorSystem(
                        self.name, TrioDriver(inner, TrioClock()), random=self.random
                    )
                    RemoteLayer(self.system, self.transport)
                    task_status.started(port)

        port: int = await nursery.start(run)
        return port


def _key() -> KeyPair:
    return KeyPair.generate(DH, SystemRandom().token_bytes)


async def _pair(nursery: trio.Nursery) -> tuple[Node, Node, int]:
    a, b = Node("a"), Node("b")
    port_a = await a.start(nursery)
    port_b = await b.start(nursery)
    a.transport.add_peer("b", PeerAddress("127.0.0.1", port_b, b.key.public))
    b.transport.add_peer("a", PeerAddress("127.0.0.1", port_a, a.key.public))
    return a, b, port_b


async def test_remote_tell_and_ask() -> None:
    async with trio.open_nursery() as nursery:
        a, b, _ = await _pair(nursery)
        assert a.system and b.system
        notes: list[Note] = []
        b.system.spawn(Echo(notes), name="echo")
        echo = a.system.ref("b", "echo")
        assert await echo.ask(Ping(41), 5.0) == Pong(42)
        for seq in range(20):
            echo.tell(Note(seq, "hello"))
        assert await echo.ask(Ping(0), 5.0) == Pong(1)
        assert [n.seq for n in notes] == list(range(20))  # one channel: order kept
        # The reverse direction uses the same (single) link.
        a.system.spawn(Echo(), name="echo")
        assert await b.system.ref("a", "echo").ask(Ping(7), 5.0) == Pong(8)
        # A crash on the far side comes back as a typed error with the report,
        # and a monitor on this side gets a Down carrying the same report.
        downs: list[Down] = []
        watcher = a.system.spawn(Watcher(downs))
        await watcher.ask(b.system.whereis("echo"), 5.0)
        with pytest.raises(ActorCrashed) as caught:
            await echo.ask(Note(99, f"crash {CANARY}"), 5.0)
        assert caught.value.report.actor.startswith("b/echo")
        assert caught.value.report.exc_type == "RuntimeError"
        assert caught.value.report.function == "receive"
        assert CANARY not in str(caught.value)
        with trio.fail_after(5):
            while not downs:
                await trio.sleep(0.01)
        assert downs[0].reason.kind is ExitKind.CRASHED
        assert downs[0].reason.crash == caught.value.report
        with pytest.raises(NotSendable):
            echo.tell(object())
        nursery.cancel_scope.cancel()


async def test_lost_connection_downs_monitors_fails_asks_and_reconnects() -> None:
    async with trio.open_nursery() as nursery:
        a, b, port_b = await _pair(nursery)
        assert a.system and b.system
        b.system.spawn(Echo(), name="echo")
        echo = a.system.ref("b", "echo")
        assert await echo.ask(Ping(1), 5.0) == Pong(2)
        downs: list[Down] = []
        watcher = a.system.spawn(Watcher(downs))
        await watcher.ask(b.system.whereis("echo"), 5.0)

        outcome: list[object] = []

        async def slow_ask() -> None:
            try:
                await echo.ask(Note(1, "slow"), 30.0)
            except PeerUnavailable as error:
                outcome.append(error)

        nursery.start_soon(slow_ask)
        await trio.sleep(0.1)
        b.scope.cancel()  # node b goes away: its sockets close
        with trio.fail_after(5):
            while not (outcome and downs):
                await trio.sleep(0.01)
        assert isinstance(outcome[0], PeerUnavailable)
        assert [d.reason.kind for d in downs] == [ExitKind.NOCONNECTION]
        with pytest.raises(PeerUnavailable):
            await echo.ask(Ping(1), 1.0)

        # b comes back on the same address; a redials with backoff.
        b2 = Node("b", b.attestation, port=port_b)
        await b2.start(nursery)
        b2.transport.add_peer("a", PeerAddress("127.0.0.1", a.transport.port or 0, a.key.public))
        assert b2.system
        b2.system.spawn(Echo(), name="echo")
        with trio.fail_after(5):
            while True:
                try:
                    assert await echo.ask(Ping(5), 1.0) == Pong(6)
                    break
                except PeerUnavailable:
                    await trio.sleep(0.02)
        nursery.cancel_scope.cancel()


async def test_peer_with_wrong_key_is_refused() -> None:
    async with trio.open_nursery() as nursery:
        a, b, port_b = await _pair(nursery)
        assert a.system
        # An impostor claims to be "b" at b's address but holds another key.
        b.scope.cancel()
        await trio.sleep(0.05)
        impostor = Node("b", port=port_b)
        await impostor.start(nursery)
        impostor.transport.add_peer(
            "a", PeerAddress("127.0.0.1", a.transport.port or 0, a.key.public)
        )
        assert impostor.system
        notes: list[Note] = []
        impostor.system.spawn(Echo(notes), name="echo")
        a_notes: list[Note] = []
        a.system.spawn(Echo(a_notes), name="echo")
        # a keeps redialling b's address (backoff at most 0.1 s) and the
        # impostor dials a: every one of those handshakes must be refused, so
        # asks keep failing in both directions for the whole window.
        for seq in range(10):
            with pytest.raises(PeerUnavailable):
                await a.system.ref("b", "echo").ask(Note(seq, "to b"), 5.0)
            with pytest.raises(PeerUnavailable):
                await impostor.system.ref("a", "echo").ask(Note(seq, "to a"), 5.0)
            await trio.sleep(0.05)
        assert notes == [] and a_notes == []
        nursery.cancel_scope.cancel()


async def test_send_refuses_frames_a_channel_could_not_carry() -> None:
    attestation = CLOUD.node("a")
    transport = TcpNoiseTransport(
        "a",
        static=attestation.static,
        random=SystemRandom(),
        peers={},
        attest=attestation.service.attest,
        verify_attestation=attestation.verifier,
    )
    transport.add_peer("b", PeerAddress("127.0.0.1", 1, _key().public))
    assert not transport.send("b", bytes(DEFAULT_MAX_PAYLOAD + 1))
    assert not transport.send("c", b"unknown peer")
    assert not transport.send("a", b"to itself")
    assert transport.send("b", bytes(DEFAULT_MAX_PAYLOAD))  # queued until the link is up
