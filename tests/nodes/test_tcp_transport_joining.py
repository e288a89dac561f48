"""Node links identified by attestation, over loopback TCP: an inference-like
node joins an ingress-like node that does not know it (``accept_joining``)
and they exchange actor messages through ``actors.remote.RemoteLayer``; a
joined peer is forgotten when its link is lost and joins again with a new
key; configured peers known by no key link up both ways; the configured key,
where given, is still enforced; and the joined peers are bounded."""

from __future__ import annotations

import pytest
import trio
from _node_attestation import Cloud, LogCapture
from _node_links import LinkNode, ask_until_answered, wait_for

from actors import PeerUnavailable
from nodes.tcp_transport import PeerAddress, TcpNoiseTransport
from protocol.messages import Pong

pytestmark = pytest.mark.anyio

CLOUD = Cloud("test-tcp-transport-joining")


async def test_an_inference_node_joins_and_they_exchange_messages() -> None:
    async with trio.open_nursery() as nursery:
        ingress = await LinkNode("ingress-1", CLOUD, accept_joining=True).start(nursery)
        inference = await LinkNode("inference-1", CLOUD).start(nursery)
        await inference.join(ingress)
        assert ingress.joined() == {"inference-1"}
        assert ingress.events.count("up", "inference-1") == 1
        # The ingress reaches the joined node over its inbound link.
        assert await ingress.ask_echo("inference-1", 41) == Pong(42)
        for nonce in range(10):
            assert await inference.ask_echo("ingress-1", nonce) == Pong(nonce + 1)
        # The link survives honest re-attestation rounds.
        await trio.sleep(1.5)
        assert await ingress.ask_echo("inference-1", 7) == Pong(8)
        assert ingress.events.count("down", "inference-1") == 0

        # The node goes away: peer_down fires and it is forgotten.
        inference.scope.cancel()
        await wait_for(lambda: ingress.events.count("down", "inference-1") == 1)
        assert ingress.joined() == frozenset()
        assert not ingress.transport.send("inference-1", b"frame")
        with pytest.raises(PeerUnavailable):
            await ingress.ask_echo("inference-1", 1)

        # Restarted, on a new TPM with a new key: it joins again.
        restarted = await LinkNode("inference-1", CLOUD).start(nursery)
        assert restarted.attestation.static.public != inference.attestation.static.public
        await restarted.join(ingress)
        assert await ingress.ask_echo("inference-1", 1) == Pong(2)
        assert restarted.echo.pings == 1
        nursery.cancel_scope.cancel()


async def test_configured_peers_known_by_no_key_link_both_ways() -> None:
    async with trio.open_nursery() as nursery:
        a = await LinkNode("a", CLOUD).start(nursery)
        b = await LinkNode("b", CLOUD).start(nursery)
        a.transport.add_peer("b", b.address())
        b.transport.add_peer("a", a.address())
        # Both dial at once; they converge on one channel.
        async with trio.open_nursery() as both:
            both.start_soon(ask_until_answered, a, "b")
            both.start_soon(ask_until_answered, b, "a")
        for nonce in range(5):
            assert await a.ask_echo("b", nonce) == Pong(nonce + 1)
            assert await b.ask_echo("a", nonce) == Pong(nonce + 1)
        assert a.joined() == b.joined() == frozenset()
        nursery.cancel_scope.cancel()


async def test_a_configured_key_is_still_enforced() -> None:
    logs = LogCapture()
    async with trio.open_nursery() as nursery:
        b = await LinkNode("b", CLOUD).start(nursery)
        other = CLOUD.node("other").static.public
        a = await LinkNode("a", CLOUD, peers={"b": PeerAddress("127.0.0.1", b.port, other)}).start(
            nursery
        )
        with pytest.raises(PeerUnavailable):
            await a.ask_echo("b", 1)
        await wait_for(lambda: "peer.static_key" in logs.checks("node_link_peer_refused"))
        assert a.events.count("up", "b") == 0
        nursery.cancel_scope.cancel()


async def test_without_accept_joining_an_unconfigured_node_is_refused() -> None:
    logs = LogCapture()
    async with trio.open_nursery() as nursery:
        ingress = await LinkNode("ingress-1", CLOUD).start(nursery)
        inference = await LinkNode("inference-1", CLOUD).start(nursery)
        inference.transport.add_peer("ingress-1", ingress.address())
        with pytest.raises(PeerUnavailable):
            await inference.ask_echo("ingress-1", 1)
        await wait_for(lambda: "peer.unknown" in logs.checks("node_link_peer_refused"))
        assert ingress.events.events == []
        nursery.cancel_scope.cancel()


async def test_joined_peers_are_bounded() -> None:
    logs = LogCapture()
    async with trio.open_nursery() as nursery:
        ingress = await LinkNode("ingress-1", CLOUD, accept_joining=True, max_joined_peers=2).start(
            nursery
        )
        first = await LinkNode("inference-1", CLOUD).start(nursery)
        second = await LinkNode("inference-2", CLOUD).start(nursery)
        await first.join(ingress)
        await second.join(ingress)
        third = await LinkNode("inference-3", CLOUD).start(nursery)
        third.transport.add_peer("ingress-1", ingress.address())
        with pytest.raises(PeerUnavailable):
            await third.ask_echo("ingress-1", 1)
        await wait_for(lambda: "peer.joined_limit" in logs.checks("node_link_peer_refused"))
        assert ingress.joined() == {"inference-1", "inference-2"}
        # A place frees up when a joined peer leaves; the third joins then.
        first.scope.cancel()
        await ask_until_answered(third, "ingress-1")
        assert ingress.joined() == {"inference-2", "inference-3"}
        nursery.cancel_scope.cancel()


def test_the_joined_bound_must_be_positive() -> None:
    node = CLOUD.node("a")
    with pytest.raises(ValueError, match="max_joined_peers"):
        TcpNoiseTransport(
            "a",
            static=node.static,
            random=LinkNode("x", CLOUD).random,
            peers={},
            attest=node.service.attest,
            verify_attestation=node.verifier,
            accept_joining=True,
            max_joined_peers=0,
        )
