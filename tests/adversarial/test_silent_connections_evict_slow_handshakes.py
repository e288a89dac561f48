"""Attack: keep honest handshakes from completing by evicting them with silent connections.

``serve_secure`` runs at most ``max_concurrent_handshakes`` handshakes, each
with its attestation exchange, and a newcomer at the cap evicts one. On the
base code the oldest went, whoever it was. A real TPM takes 100-350 ms to
attest, so an honest handshake lasts at least that long; an attacker who
opens a few hundred TCP connections a second, and never sends a byte on
them, evicted every honest handshake before its proof was out: customers of
a node and the node's own links could not get in while the flood lasted.

Now eviction goes by how far a handshake got: connections that have not
completed the Noise handshake go first (the flood only ever displaces its
own), and a handshake whose peer ``verify_peer`` accepted as a configured
node on a server that requires attestation is never evicted. An honest peer
is exposed only during its Noise handshake, a round trip, however long the
TPM then takes.
"""

from __future__ import annotations

import collections
import functools

import anyio
import anyio.abc
import pytest
import trio
from _node_attestation import Cloud, NodeAttestation, RecordingEvents, new_key

from actors.channel import (
    NOT_ATTESTED,
    ChannelAttestation,
    HandshakeEvicted,
    SecureChannel,
    connect_secure,
)
from actors.lowlevel import Backoff
from nodes.random import SystemRandom
from nodes.tcp import serve_secure
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.framing import SessionError

pytestmark = pytest.mark.anyio

RANDOM = SystemRandom()
CLOUD = Cloud("adversarial-silent-connections")
CAP = 8
#: What a NitroTPM or discrete TPM takes to attest.
TPM_LATENCY_S = 0.3
#: The flood: one new silent connection this often (250 a second), which
#: fills the cap in 32 ms, far less than one TPM command.
FLOOD_EVERY_S = 0.004


async def flood(port: int) -> None:
    """Silent TCP connections until cancelled; the attacker keeps each for a
    second (the server evicts them sooner)."""
    held: collections.deque[tuple[float, anyio.abc.SocketStream]] = collections.deque()
    try:
        while True:
            held.append((trio.current_time(), await anyio.connect_tcp("127.0.0.1", port)))
            while held and trio.current_time() - held[0][0] > 1.0:
                await held.popleft()[1].aclose()
            await trio.sleep(FLOOD_EVERY_S)
    finally:
        for _, stream in held:
            await anyio.aclose_forcefully(stream)


async def echo(channel: SecureChannel) -> None:
    async for payload in channel:
        await channel.send(payload)


async def test_a_customer_gets_in_while_silent_connections_flood_the_cap() -> None:
    node = CLOUD.node("server", tpm_latency_s=TPM_LATENCY_S)
    errors: list[Exception] = []

    async def customer() -> bool:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            channel = await connect_secure(
                stream,
                static=new_key(),
                entropy=RANDOM.token_bytes,
                verify_peer=lambda static, payload: None,
                attestation=ChannelAttestation(prove=NOT_ATTESTED, require=node.verifier),
                handshake_timeout=3.0,
            )
            async with channel:
                await channel.send(b"ping")
                return await channel.receive() == b"ping"
        except (SessionError, anyio.EndOfStream, anyio.BrokenResourceError):
            return False

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(
                    serve_secure,
                    "127.0.0.1",
                    0,
                    echo,
                    static=node.static,
                    entropy=RANDOM.token_bytes,
                    verify_peer=lambda static, payload: None,
                    attestation=ChannelAttestation(prove=node.service.attest, require=NOT_ATTESTED),
                    max_concurrent_handshakes=CAP,
                    on_error=errors.append,
                )
            )
            nursery.start_soon(flood, port)
            await trio.sleep(0.5)  # the cap is full of silent connections
            attempts = [await customer() for _ in range(4)]
            evicted = sum(isinstance(e, HandshakeEvicted) for e in errors)
            nursery.cancel_scope.cancel()
    assert evicted > 10 * CAP, "the flood did not run"
    # Every customer got in at its first attempt (on the base code none did).
    assert attempts == [True] * 4


async def test_a_configured_node_links_up_while_silent_connections_flood_the_cap() -> None:
    a = CLOUD.node("a", tpm_latency_s=TPM_LATENCY_S)
    b = CLOUD.node("b")

    def transport(name: str, node: NodeAttestation) -> TcpNoiseTransport:
        return TcpNoiseTransport(
            name,
            static=node.static,
            random=RANDOM,
            peers={},
            attest=node.service.attest,
            verify_attestation=node.verifier,
            backoff=Backoff(initial=0.05, factor=2.0, maximum=0.2, jitter=0.5),
            handshake_timeout=3.0,
            max_concurrent_handshakes=CAP,
        )

    ta, tb = transport("a", a), transport("b", b)
    b_events = RecordingEvents()
    ta.bind(RecordingEvents())
    tb.bind(b_events)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port_a: int = await nursery.start(ta.run)
            port_b: int = await nursery.start(tb.run)
            ta.add_peer("b", PeerAddress("127.0.0.1", port_b, b.static.public))
            tb.add_peer("a", PeerAddress("127.0.0.1", port_a, a.static.public))
            nursery.start_soon(flood, port_a)
            await trio.sleep(0.5)
            # b dials a, whose handshakes are flooded and whose TPM is slow.
            assert tb.send("a", b"hello")
            with trio.move_on_after(5.0):
                while b_events.count("up", "a") == 0:
                    await trio.sleep(0.01)
            events = list(b_events.events)  # before the teardown takes the link down
            nursery.cancel_scope.cancel()
    # It came up at the first dial: the handshake was not cut once.
    assert events == [("up", "a")], "b's link to a did not come up at once under the flood"
