"""Attack: answer a node's data key request with a grant the attacker made.

A data key request is not secret: the nonce, model, version and the node's
static public key all cross the operator's network. Before the fix a grant was
an anonymous Noise ``N`` envelope to the node's key with that context in the
prologue, so anyone could forge one, and the node kept whatever data key the
forger chose for the model -- it could not tell the keys node's grant from
anybody else's.

Now a grant is a Noise ``K`` envelope sealed by the keys node's static key,
and ``NodeKeyCustody.accept_grant`` requires the keys node's key as the caller
verified it (bound by the keys node's attestation document). The test forges
grants the pre-fix way (``N``), with the attacker's own static key (``K``),
and genuinely from a *different* attested keys node; each is refused with
:attr:`Denial.UNAUTHENTICATED_SENDER` and the node holds no key, while the
real keys node's grant is accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _custody_kit import MODEL, CustodyCloud, new_key_pair

from actors.key_custody import Denial, EnvelopeError, NodeKeyCustody
from nodes.random import SystemRandom
from protocol.key_custody import DataKeyGrant, DataKeyRequest, grant_prologue, seal_envelope
from protocol.noise import HandshakeState, KeyPair, NoiseProtocol

ATTACKER_KEY = bytes(range(32))


def anonymous_grant(request: DataKeyRequest) -> DataKeyGrant:
    """The pre-fix grant format: an anonymous Noise N envelope to the node."""
    handshake = HandshakeState(
        NoiseProtocol.from_name("Noise_N_25519_ChaChaPoly_BLAKE2s"),
        initiator=True,
        prologue=grant_prologue(request.nonce, MODEL, 1),
        remote_static=request.static_public,
        entropy=SystemRandom().token_bytes,
    )
    return DataKeyGrant(MODEL, 1, handshake.write_message(ATTACKER_KEY))


def grant_from(sender_static: KeyPair, request: DataKeyRequest) -> DataKeyGrant:
    """A K grant sealed by ``sender_static`` (a key pair the attacker holds)."""
    envelope = seal_envelope(
        sender_static,
        request.static_public,
        grant_prologue(request.nonce, MODEL, 1),
        ATTACKER_KEY,
        SystemRandom().token_bytes,
    )
    return DataKeyGrant(MODEL, 1, envelope)


def test_grants_not_sealed_by_the_verified_keys_node_are_refused(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(32))
    other_cloud = CustodyCloud(tmp_path / "elsewhere")  # another attested keys node
    other_cloud.vault.add_data_key(MODEL, ATTACKER_KEY)
    tpm, custody = cloud.inference_node("inference-1")
    request = cloud.request(tpm, custody)

    other_request = custody.data_key_request(
        tpm, challenge=other_cloud.vault.issue_challenge(custody.static_public), model_id=MODEL
    )
    from_other_keys_node = other_cloud.grant(other_request, custody)
    forged = [
        (request, anonymous_grant(request)),
        (request, grant_from(new_key_pair(), request)),
        (other_request, from_other_keys_node),
    ]
    for answered, grant in forged:
        with pytest.raises(EnvelopeError) as caught:
            custody.accept_grant(answered, grant, keys_node_static=cloud.keys_static)
        assert caught.value.denial is Denial.UNAUTHENTICATED_SENDER
        assert not custody.has_data_key(MODEL, 1)

    # The keys node's own grant, checked against the key its document binds.
    assert (
        custody.accept_grant(
            request, cloud.grant(request, custody), keys_node_static=cloud.keys_static
        )
        == 1
    )
    assert custody.has_data_key(MODEL, 1)


def test_accepting_a_grant_requires_the_keys_node_key() -> None:
    custody = NodeKeyCustody(random=SystemRandom())
    request = DataKeyRequest(MODEL, None, bytes(32), b"", custody.static_public)
    # No default that would skip the sender check.
    with pytest.raises(TypeError):
        custody.accept_grant(request, anonymous_grant(request))  # type: ignore[call-arg]
