"""Attack: answer a node's dial in the place of the peer it dials.

An inference node dials the ingress at its configured address knowing no
key (keys are born at boot). The operator, who owns the network, puts an
impostor at that address: a node of another PKI claiming the ingress's
name, a node of the cluster's PKI running other code, or a genuine node
answering under another name. Without a key to check, the dialler relies on
the name and the attestation: each impostor is refused, the link never comes
up, and no frame reaches the impostor.
"""

from __future__ import annotations

import hashlib

import pytest
import trio
from _node_attestation import Cloud, LogCapture, NodeAttestation
from _node_links import LinkNode, wait_for

from actors import PeerUnavailable
from protocol.measurement import APPLICATION_PCRS

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("impostor", "log", "check"),
    [
        ("foreign-pki", "node_link_dial_failed", "attestation.refused"),
        ("other-code", "node_link_dial_failed", "attestation.refused"),
        ("other-name", "node_link_peer_refused", "peer.unexpected"),
    ],
)
async def test_an_impostor_at_the_dialled_address_is_refused(
    impostor: str, log: str, check: str
) -> None:
    logs = LogCapture()
    cloud = Cloud("adversarial-dial-impostor")
    # The impostor admits whoever dials it (it wants the link up), and checks
    # the dialler's documents with the cluster's verifier, which they pass.
    if impostor == "foreign-pki":
        foreign = Cloud("adversarial-dial-impostor-operator-pki").node("ingress-1")
        attestation = NodeAttestation(
            foreign.tpm, foreign.custody, foreign.service, cloud.peer_verifier()
        )
        fake = LinkNode("ingress-1", cloud, attestation=attestation, accept_joining=True)
    elif impostor == "other-code":
        fake = LinkNode("ingress-1", cloud, accept_joining=True)
        fake.attestation.tpm.pcr_extend(APPLICATION_PCRS[0], hashlib.sha384(b"other").digest())
    else:
        fake = LinkNode("ingress-2", cloud, accept_joining=True)
    async with trio.open_nursery() as nursery:
        await fake.start(nursery)
        inference = await LinkNode("inference-1", cloud).start(nursery)
        inference.transport.add_peer("ingress-1", fake.address())
        for nonce in range(3):
            with pytest.raises(PeerUnavailable):
                await inference.ask_echo("ingress-1", nonce)
        await wait_for(lambda: [e.get("check") for e in logs.events(log)].count(check) >= 3)
        assert inference.events.count("up", "ingress-1") == 0
        assert fake.echo.pings == 0
        assert fake.events.frames == []
        nursery.cancel_scope.cancel()
