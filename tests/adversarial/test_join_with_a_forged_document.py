"""Attack: join the ingress node with a document that is not this link's.

The ingress admits inference nodes by their attestation alone (their keys
are not known in advance). The operator dials it as ``inference-1`` and
presents a document that is genuine somewhere else:

* one signed by another PKI (a simulated cloud the operator controls), for
  this very handshake's nonce and key and the listed PCRs;
* one that an honest ``inference-1`` presented on an earlier link to this
  ingress, replayed with that node's stolen key or with a fresh one.

Each is refused by the ingress's verifier (chain, nonce, key binding), before
the link comes up and before the ingress's TPM does anything for it.
"""

from __future__ import annotations

import pytest
import trio
from _node_attestation import Cloud, LogCapture, NodeAttestation
from _node_links import LinkNode, wait_for

from actors import PeerUnavailable
from actors.attestation import Evidence
from actors.key_custody import NodeKeyCustody
from nodes.random import SystemRandom

pytestmark = pytest.mark.anyio


async def _refused(ingress: LinkNode, forger: LinkNode, logs: LogCapture) -> None:
    pings = ingress.echo.pings  # the honest node's, if one joined before
    frames = len(ingress.events.frames)
    forger.transport.add_peer("ingress-1", ingress.address())
    for nonce in range(3):
        with pytest.raises(PeerUnavailable):
            await forger.ask_echo("ingress-1", nonce)
    await wait_for(
        lambda: logs.checks("secure_channel.connection_failed").count("attestation.refused") >= 3
    )
    assert ingress.events.count("up", "inference-1") <= 1  # the honest join, if any
    assert ingress.joined() == frozenset()
    assert ingress.echo.pings == pings
    assert len(ingress.events.frames) == frames


async def test_a_document_from_another_pki_cannot_join() -> None:
    logs = LogCapture()
    cloud = Cloud("adversarial-forged-join")
    foreign = Cloud("adversarial-forged-join-operator-pki")
    async with trio.open_nursery() as nursery:
        ingress = await LinkNode("ingress-1", cloud, accept_joining=True).start(nursery)
        # A node of the operator's PKI, whose TPM shows the same registers.
        forger = await LinkNode("inference-1", foreign).start(nursery)
        assert forger.attestation.tpm.pcr_read(0) == ingress.attestation.tpm.pcr_read(0)
        await _refused(ingress, forger, logs)
        assert ingress.own_attest.made == []
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("stolen_key", [True, False], ids=["stolen-key", "fresh-key"])
async def test_a_document_replayed_from_another_channel_cannot_join(stolen_key: bool) -> None:
    logs = LogCapture()
    cloud = Cloud("adversarial-replayed-join")
    async with trio.open_nursery() as nursery:
        ingress = await LinkNode("ingress-1", cloud, accept_joining=True).start(nursery)
        honest = await LinkNode("inference-1", cloud).start(nursery)
        await honest.join(ingress)
        captured = list(honest.own_attest.made)
        assert captured
        honest.scope.cancel()
        await wait_for(lambda: ingress.joined() == frozenset())
        proofs_so_far = len(ingress.own_attest.made)

        async def replay(nonce: bytes) -> Evidence:
            return captured[0]

        if stolen_key:
            attestation = honest.attestation
        else:
            custody = NodeKeyCustody(random=SystemRandom())
            attestation = NodeAttestation(
                honest.attestation.tpm, custody, honest.attestation.service, cloud.peer_verifier()
            )
        forger = await LinkNode("inference-1", cloud, attestation=attestation, attest=replay).start(
            nursery
        )
        await _refused(ingress, forger, logs)
        assert len(ingress.own_attest.made) == proofs_so_far
        nursery.cancel_scope.cancel()
