"""Attack: boot an old (validly signed, logged) release on a fresh machine.

The TPM counter protects one machine; a fresh machine (or one whose owner
deleted the counter) starts at 0, and the old release's signatures, log entry
and expiry are all still valid. Before the fix its nodes got data keys and
prompts. Now the release signers publish the cluster's floor (``min_version``)
in the signed, logged targets of the newer release, and every policy builder
leaves out releases below the highest floor it is given: the keys node
refuses the key, the client and node links refuse the node, wherever it booted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseKit

from actors.key_custody import KeyReleaseDenied, KeyVault
from nodes.boot import measured_boot
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    PolicyViolation,
    TrustAnchor,
    noise_key_binding,
)
from protocol.measurement import cluster_policy, model_policy
from protocol.release import release_log_entry
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

NOW_MS = int(NOW.timestamp() * 1000)
MODEL = "smol"
WEIGHTS = b"GGUF" + hashlib.shake_256(b"weights").digest(4096)


def test_release_below_the_floor_gets_no_key_and_no_prompt(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    old_files = kit.publish(1, models={MODEL: WEIGHTS})
    new_files = kit.publish(2, models={MODEL: WEIGHTS}, min_version=2)
    old, new = kit.verified(old_files), kit.verified(new_files)
    assert (old.min_version, new.min_version) == (0, 2)
    # The floor is part of the signed payload the log commits to.
    assert b'"min_version": 2' in new_files.targets
    assert json.loads(new_files.targets)["signed"]["min_version"] == 2
    assert release_log_entry(new).endswith(new.release_digest)

    pki = SimulatedNitroPKI("cloud")
    wall = ManualClock(NOW_MS)
    anchor = TrustAnchor.from_der(pki.root_der)
    keys_tpm = SimulatedNitroTPM(seed="keys", pki=pki, clock=wall)
    keys_node = measured_boot(
        kit.boot_inputs(new_files, None, kit.node_state_dir(keys_tpm)),
        tpm=keys_tpm,
        random=SystemRandom(),
        now=NOW,
    )
    known = [old, new]  # the keys node and the client know both logged releases
    vault = KeyVault(
        custody=keys_node.custody,
        tpm=keys_tpm,
        random=SystemRandom(),
        clock=wall,
        verifier=AttestationVerifier([NitroAuthenticator(anchor)]),
        policy_for=lambda model_id: model_policy(known, model_id),
        keyring=KeyVault.new_keyring(keys_tpm, SystemRandom()),
        # No release names a provider key here: the tests add keys directly.
        provider_static_for=lambda model_id: None,
        persist=lambda keyring_file: None,
    )
    vault.add_data_key(MODEL, SystemRandom().token_bytes(32))

    # A fresh machine: its counter is 0, so boot accepts the old release.
    old_tpm = SimulatedNitroTPM(seed="fresh", pki=pki, clock=wall)
    old_node = measured_boot(
        kit.boot_inputs(old_files, MODEL, kit.node_state_dir(old_tpm)),
        tpm=old_tpm,
        random=SystemRandom(),
        now=NOW,
    )
    assert old_node.release.version == 1

    request = old_node.custody.data_key_request(
        old_tpm, challenge=vault.issue_challenge(old_node.custody.static_public), model_id=MODEL
    )
    with pytest.raises(KeyReleaseDenied) as denied:
        vault.release_data_key(request, peer=request.static_public)
    assert denied.value.attestation_check == "pcr_policy"
    assert not old_node.custody.has_data_key(MODEL, 1)

    for policy in (model_policy(known, MODEL), cluster_policy(known)):
        assert policy is not None
        assert {entry.name for entry in policy.releases} <= {"v2", f"v2/{MODEL}"}
        with pytest.raises(PolicyViolation) as refused:
            AttestationVerifier([NitroAuthenticator(anchor)]).verify(
                old_node.document,
                kind=DocumentKind.NITRO,
                expectations=Expectations(
                    pcr_policy=policy,
                    max_age_ms=300_000,
                    expected_public_key=noise_key_binding(old_node.custody.static_public),
                ),
                now_ms=NOW_MS,
            )
        assert refused.value.check.value == "pcr_policy"

    # A node on the current release is served as before.
    new_tpm = SimulatedNitroTPM(seed="current", pki=pki, clock=wall)
    new_node = measured_boot(
        kit.boot_inputs(new_files, MODEL, kit.node_state_dir(new_tpm)),
        tpm=new_tpm,
        random=SystemRandom(),
        now=NOW,
    )
    request = new_node.custody.data_key_request(
        new_tpm, challenge=vault.issue_challenge(new_node.custody.static_public), model_id=MODEL
    )
    assert (
        new_node.custody.accept_grant(
            request,
            vault.release_data_key(request, peer=request.static_public),
            keys_node_static=keys_node.custody.static_public,
        )
        == 1
    )
