"""Attack: import a data key the attacker knows, then have the weights resealed under it.

The operator knows the keys node's static public key (its attestation document
binds it). Before the fix, ``KeyVault.import_data_key`` accepted any Noise
``N`` envelope addressed to that key -- the ``N`` sender is anonymous -- so the
operator could stage a data key of their choosing: the next ordinary
``reseal_model`` re-encrypted the weights under a key they know, and the
staged key blocked the legitimate rotation (one staged key per model).

Now an import opens only if the model provider's static key, named for the
model in the verified release, sealed it. The test tries an anonymous ``N``
envelope, a ``K`` envelope from the attacker's own static key, and an import
for a model no release names a provider key for; each is refused with a
named :class:`Denial`, the keyring is untouched, and a legitimate rotation
and provider import go through afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _custody_kit import MODEL, WEIGHTS, CustodyCloud, new_key_pair

from actors.key_custody import Denial, EnvelopeError
from nodes.random import SystemRandom
from protocol.attestation.binding import noise_key_binding
from protocol.key_custody import DataKeyImport, import_prologue, seal_data_key_import
from protocol.noise import HandshakeState, NoiseProtocol
from protocol.sealed_model import (
    NONCE_PREFIX_SIZE,
    SealedModelAuthError,
    SealedModelHeader,
    open_stream,
    seal_stream,
)

ATTACKER_KEY = bytes(range(32))


def anonymous_import(cloud: CustodyCloud, version: int) -> DataKeyImport:
    """The pre-fix import format: an anonymous Noise N envelope to the keys node."""
    prologue = import_prologue(MODEL, version, noise_key_binding(cloud.vault.static_public))
    handshake = HandshakeState(
        NoiseProtocol.from_name("Noise_N_25519_ChaChaPoly_BLAKE2s"),
        initiator=True,
        prologue=prologue,
        remote_static=cloud.vault.static_public,
        entropy=SystemRandom().token_bytes,
    )
    return DataKeyImport(MODEL, version, handshake.write_message(ATTACKER_KEY))


def sealed_weights(key: bytes, version: int) -> list[bytes]:
    header = SealedModelHeader(
        model_id=MODEL,
        key_version=version,
        chunk_size=1024,
        nonce_prefix=SystemRandom().token_bytes(NONCE_PREFIX_SIZE),
    )
    return list(seal_stream([WEIGHTS], header, key))


def test_imports_not_sealed_by_the_model_provider_are_refused(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    data_key = SystemRandom().token_bytes(32)
    assert cloud.vault.add_data_key(MODEL, data_key) == 1
    v1_file = sealed_weights(data_key, 1)
    before = cloud.vault.keyring

    attacker = new_key_pair()
    forged = [
        anonymous_import(cloud, 2),
        seal_data_key_import(
            MODEL, ATTACKER_KEY, cloud.vault.static_public, SystemRandom().token_bytes,
            provider=attacker, key_version=2,
        ),
    ]  # fmt: skip
    for envelope in forged:
        with pytest.raises(EnvelopeError) as caught:
            cloud.vault.import_data_key(envelope)
        assert caught.value.denial is Denial.UNAUTHENTICATED_SENDER
    # A model for which no release names a provider key accepts no import at all,
    # not even one sealed by the provider of another model.
    with pytest.raises(EnvelopeError) as caught:
        cloud.vault.import_data_key(
            seal_data_key_import(
                "unlisted-model", ATTACKER_KEY, cloud.vault.static_public,
                SystemRandom().token_bytes, provider=cloud.provider,
            )
        )  # fmt: skip
    assert caught.value.denial is Denial.NO_PROVIDER_KEY
    # The messages name the check, not the input.
    assert ATTACKER_KEY.hex() not in str(caught.value)

    # Nothing was staged...
    assert cloud.vault.keyring == before
    assert cloud.vault.keyring.data_key(MODEL, 2) is None

    # ...so the legitimate rotation is not blocked, and the resealed weights are
    # under a key the attacker does not hold.
    new_version = cloud.vault.begin_data_key_rotation(MODEL)
    assert new_version == 2
    resealed = list(cloud.vault.reseal_model(MODEL, v1_file, new_version, chunk_size=1024))
    with pytest.raises(SealedModelAuthError):
        b"".join(open_stream(resealed, lambda header: ATTACKER_KEY, expected_model_id=MODEL))
    cloud.vault.activate_data_key(MODEL, new_version)
    tpm, custody = cloud.inference_node("inference-1")
    assert cloud.fetch(tpm, custody) == 2
    opened = b"".join(open_stream(resealed, custody.data_key_for, expected_model_id=MODEL))
    assert opened == WEIGHTS

    # The real provider still imports its next key.
    provider_key = SystemRandom().token_bytes(32)
    genuine = seal_data_key_import(
        MODEL, provider_key, cloud.vault.static_public, SystemRandom().token_bytes,
        provider=cloud.provider, key_version=3,
    )  # fmt: skip
    assert cloud.vault.import_data_key(genuine) == 3
