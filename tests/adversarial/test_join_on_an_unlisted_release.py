"""Attack: join the ingress node with a node that runs an unlisted release.

The ingress node admits inference nodes it does not know in advance
(``accept_joining``); what admits one is its attestation. The operator boots
a node on the cluster's PKI and TPMs but with other code (its application
registers differ from every listed release) and has it dial the ingress.
Its document is genuine and bound to its handshake key, but fails the PCR
policy: the ingress refuses it before the link comes up (no ``peer_up``, not
joined, no frame delivered), and, having verified the stranger's evidence
before proving itself, spent no TPM command on it.
"""

from __future__ import annotations

import hashlib

import pytest
import trio
from _node_attestation import Cloud, LogCapture
from _node_links import LinkNode, wait_for

from actors import PeerUnavailable
from protocol.measurement import APPLICATION_PCRS

pytestmark = pytest.mark.anyio


async def test_a_node_on_an_unlisted_release_cannot_join() -> None:
    logs = LogCapture()
    cloud = Cloud("adversarial-join-unlisted-release")
    async with trio.open_nursery() as nursery:
        ingress = await LinkNode("ingress-1", cloud, accept_joining=True).start(nursery)
        rogue = LinkNode("inference-1", cloud)
        rogue.attestation.tpm.pcr_extend(
            APPLICATION_PCRS[0], hashlib.sha384(b"an unlisted release").digest()
        )
        await rogue.start(nursery)
        rogue.transport.add_peer("ingress-1", ingress.address())
        for nonce in range(3):  # each ask redials; each dial is refused
            with pytest.raises(PeerUnavailable):
                await rogue.ask_echo("ingress-1", nonce)
        await wait_for(
            lambda: (
                logs.checks("secure_channel.connection_failed").count("attestation.refused") >= 3
            )
        )
        assert ingress.events.events == []
        assert ingress.events.frames == []
        assert ingress.joined() == frozenset()
        assert ingress.echo.pings == 0
        assert ingress.own_attest.made == []  # the ingress's TPM never worked for it
        assert rogue.own_attest.made  # while the rogue did present its documents
        nursery.cancel_scope.cancel()
