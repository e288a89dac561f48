"""Attack: an impostor keys node collects an inference node's attestation
document (and would hand out a key of the operator's choosing).

The operator answers on the keys node's address: with a server that proves
nothing, with a genuine machine whose registers show its own image, or with
a channel on which the fetching node never required the keys node's proof.
The fetching node verifies the keys node's attestation on the channel
against the cluster's policy before it sends anything, and fetch_data_key
refuses a channel that did not: the impostor receives no request and no
document, and the node's TPM is never asked to attest over its challenge.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _custody_kit import MODEL, CustodyCloud, new_key_pair
from _keys_wire_kit import (
    accept_anyone,
    attestation_service,
    dial,
    keys_node_verifier,
    serving_keys_node,
)

from actors.attestation import Evidence
from actors.channel import NOT_ATTESTED, ChannelAttestation, SecureChannel, connect_secure
from actors.key_custody import (
    KeyExchangeCheck,
    KeyExchangeRefused,
    NodeKeyCustody,
    asker_channel_attestation,
    fetch_data_key,
    keys_node_channel_attestation,
)
from actors.seams.tpm import TPM
from nodes.random import SystemRandom
from protocol.framing import PeerRejected, SessionCheck

pytestmark = pytest.mark.anyio


class CountingTPM:
    """The inference node's TPM, counting the documents it is asked for."""

    def __init__(self, tpm: TPM) -> None:
        self._tpm = tpm
        self.attested = 0

    def attest(self, **kwargs: object) -> bytes:
        self.attested += 1
        return self._tpm.attest(**kwargs)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._tpm, name)


class Impostor:
    """The impostor's handler: records whatever the fetching node sends."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def handler(self, _ask: object) -> object:
        async def handle(channel: SecureChannel) -> None:
            async for payload in channel:
                self.received.append(payload)

        return handle


async def _fetch(port: int, cloud: CustodyCloud, custody: NodeKeyCustody, tpm: CountingTPM) -> None:
    async with await dial(port, custody.static, keys_node_verifier(cloud)) as channel:
        await fetch_data_key(channel, custody, tpm, MODEL)  # type: ignore[arg-type]


async def _refuses(
    cloud: CustodyCloud, attestation: ChannelAttestation, check: SessionCheck
) -> None:
    tpm, custody = cloud.inference_node("inference-1")
    counting = CountingTPM(tpm)
    impostor = Impostor()
    async with serving_keys_node(
        cloud, handler=impostor.handler, attestation=attestation, static=new_key_pair()
    ) as keys:
        with pytest.raises(PeerRejected) as refused:
            await _fetch(keys.port, cloud, custody, counting)
    assert refused.value.check is check
    assert impostor.received == []
    assert counting.attested == 0
    assert not custody.has_data_key(MODEL, 1)


async def test_an_impostor_that_proves_nothing_is_refused(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)

    async def anything(remote_static: bytes, evidence: Evidence, nonce: bytes) -> None:
        """The impostor's own check of the asker: it takes anything."""

    await _refuses(
        cloud,
        ChannelAttestation(prove=NOT_ATTESTED, require=anything),
        SessionCheck.ATTESTATION_MISSING,
    )


async def test_an_impostor_on_its_own_image_is_refused(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    # The keys node's machine booted into the operator's image: genuine
    # documents, platform registers that no release names.
    operator_tpm = cloud.operator_boot()
    impostor_custody = NodeKeyCustody(random=SystemRandom())
    prove = attestation_service(cloud, operator_tpm, impostor_custody).attest_client_channel
    await _refuses(cloud, keys_node_channel_attestation(prove), SessionCheck.ATTESTATION_REFUSED)


async def test_a_channel_that_did_not_verify_the_keys_node_is_not_used(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    tpm, custody = cloud.inference_node("inference-1")
    counting = CountingTPM(tpm)
    impostor = Impostor()
    # The fetching node proves itself on the channel but requires nothing of
    # the server (a wiring mistake): the channel opens, fetch_data_key does not use it.
    own_proof = attestation_service(cloud, tpm, custody).attest
    async with serving_keys_node(
        cloud,
        handler=impostor.handler,
        attestation=ChannelAttestation(prove=NOT_ATTESTED, require=accept_evidence),
        static=new_key_pair(),
    ) as keys:
        stream = await anyio.connect_tcp("127.0.0.1", keys.port)
        channel = await connect_secure(
            stream,
            static=custody.static,
            entropy=SystemRandom().token_bytes,
            verify_peer=accept_anyone,
            attestation=ChannelAttestation(prove=own_proof, require=NOT_ATTESTED),
        )
        async with channel:
            with pytest.raises(KeyExchangeRefused) as refused:
                await fetch_data_key(channel, custody, counting, MODEL)  # type: ignore[arg-type]
    assert refused.value.check is KeyExchangeCheck.UNATTESTED_KEYS_NODE
    assert impostor.received == []
    assert counting.attested == 0


async def accept_evidence(remote_static: bytes, evidence: Evidence, nonce: bytes) -> None:
    """The impostor's check of the asker's channel proof: it takes anything."""


def test_the_asker_side_always_requires_the_keys_node() -> None:
    # There is no asker exchange that leaves the keys node's proof out.
    with pytest.raises(TypeError):
        asker_channel_attestation(None)  # type: ignore[arg-type]
