"""Attack: join the ingress node under a name that is someone else's.

Names of joined nodes are claims: keys are not known in advance, and any
node that attests may join. The operator boots a second genuine node (the
released code on the cluster's PKI: its attestation passes) and has it claim

* the name of an inference node whose link is up, to take its traffic over;
* the ingress node's own name;
* a configured peer's name, whose key the ingress knows.

Each is refused at the handshake with a typed check (``peer.in_use``,
``peer.self``, ``peer.static_key``) before the TPM works for it; the honest
node keeps its link and receives every frame sent to its name.
"""

from __future__ import annotations

import contextlib

import anyio
import pytest
import trio
from _node_attestation import Cloud, LogCapture, hello, raw_handshake
from _node_links import LinkNode, wait_for

from actors import PeerUnavailable
from nodes.tcp_transport import PeerAddress
from protocol.messages import Pong

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("claimed", "check"),
    [("inference-1", "peer.in_use"), ("ingress-1", "peer.self"), ("keys-1", "peer.static_key")],
    ids=["joined-name", "ingress-name", "configured-name"],
)
async def test_a_squatter_is_refused(claimed: str, check: str) -> None:
    logs = LogCapture()
    cloud = Cloud("adversarial-joiner-squats")
    keys_key = cloud.node("keys-1").static.public
    async with trio.open_nursery() as nursery:
        ingress = await LinkNode(
            "ingress-1",
            cloud,
            accept_joining=True,
            # The keys node is configured with its key (its address is closed).
            peers={"keys-1": PeerAddress("127.0.0.1", 1, keys_key)},
        ).start(nursery)
        honest = await LinkNode("inference-1", cloud).start(nursery)
        await honest.join(ingress)
        proofs = len(ingress.own_attest.made)

        squatter = await LinkNode(claimed, cloud).start(nursery)
        if claimed == "ingress-1":
            # A node cannot dial under the name of the node it dials: the
            # squatter runs the handshake by hand, with a genuine node's key.
            for _ in range(3):
                with contextlib.suppress(Exception):
                    stream = await anyio.connect_tcp("127.0.0.1", ingress.port)
                    await raw_handshake(stream, squatter.attestation.static, hello(claimed))
                    await stream.receive()
        else:
            squatter.transport.add_peer("ingress-1", ingress.address())
            for nonce in range(3):
                with pytest.raises(PeerUnavailable):
                    await squatter.ask_echo("ingress-1", nonce)
        await wait_for(lambda: logs.checks("node_link_peer_refused").count(check) >= 3)
        assert ingress.joined() == {"inference-1"}
        assert ingress.events.events == [("up", "inference-1")]
        assert len(ingress.own_attest.made) == proofs  # no TPM command for the squatter
        # Traffic for the name still goes to the honest node, and only there.
        for nonce in range(5):
            assert await ingress.ask_echo("inference-1", nonce) == Pong(nonce + 1)
        assert honest.echo.pings == 5
        assert squatter.echo.pings == 0 or claimed == "ingress-1"  # its own asks, above
        nursery.cancel_scope.cancel()
