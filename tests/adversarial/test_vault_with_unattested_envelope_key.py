"""Attack: run the keys node's vault on a key its attestation document does not bind.

Before the fix ``KeyVault(static=None)`` made a fresh Noise key of its own
(the demo built its vault that way) while the node's attestation document
bound the custody's key: the vault's envelope key was covered by no
attestation, and a caller could hand the vault any key at all. Now the vault
has no key parameter: it takes the node's ``NodeKeyCustody``, whose key is
born inside it at boot and is the one every document of the node binds, and
``NodeKeyCustody`` takes no key from outside either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _custody_kit import MODEL, CustodyCloud, new_key_pair

from actors.key_custody import KeyVault, NodeKeyCustody
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    TrustAnchor,
)
from protocol.attestation.binding import noise_key_binding
from protocol.key_custody import seal_data_key_import
from protocol.measurement import cluster_policy, model_policy


def test_a_vault_cannot_be_built_on_a_key_of_its_own(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    anchor = TrustAnchor.from_der(cloud.pki.root_der)
    common: dict[str, Any] = {
        "tpm": cloud.keys_tpm,
        "random": SystemRandom(),
        "clock": cloud.wall,
        "verifier": AttestationVerifier([NitroAuthenticator(anchor)]),
        "policy_for": lambda model_id: model_policy([cloud.release], model_id),
        "provider_static_for": cloud.release.model_provider_static,
        "keyring": cloud.stored[-1],
        "persist": cloud.stored.append,
    }
    # The pre-fix ways: no key (a fresh one is made) or any key the caller has.
    with pytest.raises(TypeError, match="custody"):
        KeyVault(**common)
    with pytest.raises(TypeError, match="static"):
        KeyVault(**common, custody=cloud.keys_node.custody, static=new_key_pair())
    with pytest.raises(TypeError, match="static"):
        NodeKeyCustody(random=SystemRandom(), static=new_key_pair())  # type: ignore[call-arg]


def test_the_vault_key_is_the_key_the_keys_node_document_binds(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    assert cloud.vault.static_public == cloud.keys_node.custody.static_public
    # What a model provider checks before sealing an import to the keys node.
    verifier = AttestationVerifier([NitroAuthenticator(TrustAnchor.from_der(cloud.pki.root_der))])
    verifier.verify(
        cloud.keys_node.document,
        kind=DocumentKind.NITRO,
        expectations=Expectations(
            pcr_policy=cluster_policy([cloud.release]),
            max_age_ms=60_000,
            expected_public_key=noise_key_binding(cloud.vault.static_public),
        ),
        now_ms=cloud.wall.wall_ms(),
    )
    # And an import sealed to that attested key is the one the vault opens.
    data_key = SystemRandom().token_bytes(32)
    envelope = seal_data_key_import(
        MODEL, data_key, cloud.keys_node.custody.static_public, SystemRandom().token_bytes,
        provider=cloud.provider,
    )  # fmt: skip
    assert cloud.vault.import_data_key(envelope) == 1
