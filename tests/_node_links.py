"""Nodes on real TCP links for the joining tests: an ingress-like node that
admits joiners, inference-like nodes that dial it knowing no key, each with
an actor system on its transport (``actors.remote.RemoteLayer``).

A :class:`LinkNode` boots on a fresh SimulatedNitroTPM of a :class:`Cloud`
(``_node_attestation``), as the transport tests do; ``attest`` replaces the
node's attestation source where an attack needs another one (a replaying or
forging one); by default it is the node's own, wrapped in a
:class:`CountingAttest`. Re-attestation runs every :data:`INTERVAL`
seconds so that lapses show within a test's time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import trio
from _node_attestation import Cloud, NodeAttestation, RecordingEvents

from actors import Actor, ActorSystem, AskTimeout, Context, PeerUnavailable, TrioDriver
from actors.attestation import Evidence
from actors.lowlevel import Backoff
from actors.remote import RemoteLayer
from nodes.clock import TrioClock
from nodes.random import SystemRandom
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.messages import Ping, Pong

FAST = Backoff(initial=0.02, factor=2.0, maximum=0.1, jitter=0.5)
INTERVAL = 0.2
TIMEOUT = 0.3

AttestSource = Callable[[bytes], Awaitable[Evidence]]


class Echo(Actor):
    """Answers a Ping with the next Pong and counts what it was sent."""

    def __init__(self) -> None:
        self.pings = 0

    async def receive(self, ctx: Context, message: object) -> object:
        if isinstance(message, Ping):
            self.pings += 1
            return Pong(message.nonce + 1)
        return None


class CountingAttest:
    """A node's own attestation source, counting the documents it made (so a
    test sees whom the TPM worked for), recording them, and able to stop
    answering (``withhold``), as an operator can make a node do."""

    def __init__(self, node: NodeAttestation) -> None:
        self._node = node
        self.made: list[Evidence] = []
        self.withhold = False

    async def __call__(self, nonce: bytes) -> Evidence:
        if self.withhold:
            await trio.sleep_forever()
        evidence = await self._node.service.attest(nonce)
        self.made.append(evidence)
        return evidence


class LinkNode:
    """One node: attestation, transport, actor system, and what its transport reported."""

    def __init__(
        self,
        name: str,
        cloud: Cloud,
        *,
        peers: Mapping[str, PeerAddress] | None = None,
        accept_joining: bool = False,
        max_joined_peers: int = 1024,
        attestation: NodeAttestation | None = None,
        attest: AttestSource | None = None,
        max_concurrent_handshakes: int = 64,
    ) -> None:
        self.name = name
        self.attestation = attestation if attestation is not None else cloud.node(name)
        self.own_attest = CountingAttest(self.attestation)
        self.random = SystemRandom()
        self.transport = TcpNoiseTransport(
            name,
            static=self.attestation.static,
            random=self.random,
            peers=dict(peers or {}),
            attest=attest if attest is not None else self.own_attest,
            verify_attestation=self.attestation.verifier,
            backoff=FAST,
            handshake_timeout=2.0,
            reattest_interval=INTERVAL,
            reattest_timeout=TIMEOUT,
            min_answer_interval=0.0,
            accept_joining=accept_joining,
            max_joined_peers=max_joined_peers,
            max_concurrent_handshakes=max_concurrent_handshakes,
        )
        self.events = RecordingEvents()
        self.system: ActorSystem | None = None
        self.echo = Echo()
        self.scope = trio.CancelScope()

    @property
    def port(self) -> int:
        assert self.transport.port is not None
        return self.transport.port

    def address(self) -> PeerAddress:
        """Where this node listens, its key not known in advance."""
        return PeerAddress("127.0.0.1", self.port)

    def joined(self) -> frozenset[str]:
        return self.transport.joined_peers

    async def start(self, nursery: trio.Nursery) -> LinkNode:
        """Run the node (until :attr:`scope` is cancelled), with an ``echo`` actor."""

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with self.scope:
                async with trio.open_nursery() as inner:
                    await inner.start(self.transport.run)
                    self.system = ActorSystem(
                        self.name, TrioDriver(inner, TrioClock()), random=self.random
                    )
                    layer = RemoteLayer(self.system, self.transport)
                    # The layer is the transport's sink; record what it is told too.
                    self.transport.bind(_Both(layer, self.events))
                    self.system.spawn(self.echo, name="echo")
                    task_status.started()

        await nursery.start(run)
        return self

    async def ask_echo(self, peer: str, nonce: int, timeout: float = 2.0) -> object:
        """Ask ``peer``'s echo actor (a first ask to a configured peer dials it)."""
        assert self.system is not None
        return await self.system.ref(peer, "echo").ask(Ping(nonce), timeout)

    async def join(self, ingress: LinkNode, *, timeout: float = 5.0) -> None:
        """Configure ``ingress`` (key unknown) and ask until the link answers."""
        self.transport.add_peer(ingress.name, ingress.address())
        await ask_until_answered(self, ingress.name, timeout=timeout)


async def ask_until_answered(node: LinkNode, peer: str, *, timeout: float = 5.0) -> None:
    """Ask ``peer``'s echo until it answers: the link came up and carries asks."""
    with trio.fail_after(timeout):
        while True:
            try:
                assert await node.ask_echo(peer, 1, timeout=1.0) == Pong(2)
                return
            except (PeerUnavailable, AskTimeout):
                await trio.sleep(0.02)


class _Both:
    """Hands each transport event to the runtime and to a recorder."""

    def __init__(self, layer: RemoteLayer, recorder: RecordingEvents) -> None:
        self._layer = layer
        self._recorder = recorder

    def peer_up(self, peer: str) -> None:
        self._layer.peer_up(peer)
        self._recorder.peer_up(peer)

    def peer_down(self, peer: str) -> None:
        self._layer.peer_down(peer)
        self._recorder.peer_down(peer)

    def frame_received(self, peer: str, frame: bytes) -> None:
        self._layer.frame_received(peer, frame)
        self._recorder.frame_received(peer, frame)


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; a generous upper bound, not a speed check."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)
