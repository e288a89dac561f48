"""Attack: a machine that runs another image replays Mantle's application measurements.

The application registers are extended by user space, so any code on any image
can extend the published event digests into them (they are in the release, and
the algorithm is public). Before the fix a policy pinned only those registers:
such a machine got the model's data key from a keys node and passed a client's
verifier. Now every policy entry also pins the platform registers (PCR 4, 7,
12) of the image the release names, which the firmware wrote before any of the
attacker's code ran.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseKit

from actors.key_custody import KeyReleaseDenied, KeyVault, NodeKeyCustody
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
from protocol.measurement import (
    boot_extends,
    cluster_policy,
    model_policy,
    release_measurement,
)
from simulations.clock import ManualClock
from simulations.nitrotpm import (
    NodeImage,
    SimulatedNitroPKI,
    SimulatedNitroTPM,
    development_image,
)

NOW_MS = int(NOW.timestamp() * 1000)
MODEL = "smol"
WEIGHTS = b"GGUF" + hashlib.shake_256(b"weights").digest(4096)


def _other_images(kit: ReleaseKit) -> list[NodeImage]:
    """Images other than the released one: another tree, another kernel, another
    Secure Boot policy, another command line (each differs in one register)."""
    released = kit.image
    other = hashlib.sha384(b"attacker's choice").digest()
    return [
        development_image(kit.source_manifest + b"0" * 96 + b"  nodes/backdoor.py\n"),
        NodeImage(other, released.secure_boot_policy_digest, released.command_line_digest),
        NodeImage(released.uki_digest, other, released.command_line_digest),
        NodeImage(released.uki_digest, released.secure_boot_policy_digest, other),
    ]


@pytest.mark.parametrize("which", range(4))
def test_foreign_image_gets_no_key_and_fails_the_client(tmp_path: Path, which: int) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1, models={MODEL: WEIGHTS})
    release = kit.verified(files)
    pki = SimulatedNitroPKI("cloud")
    wall = ManualClock(NOW_MS)
    anchor = TrustAnchor.from_der(pki.root_der)

    keys_tpm = SimulatedNitroTPM(seed="keys", pki=pki, clock=wall)
    keys_node = measured_boot(
        kit.boot_inputs(files, None, kit.node_state_dir(keys_tpm)),
        tpm=keys_tpm,
        random=SystemRandom(),
        now=NOW,
    )
    vault = KeyVault(
        custody=keys_node.custody,
        tpm=keys_tpm,
        random=SystemRandom(),
        clock=wall,
        verifier=AttestationVerifier([NitroAuthenticator(anchor)]),
        policy_for=lambda model_id: model_policy([release], model_id),
        keyring=KeyVault.new_keyring(keys_tpm, SystemRandom()),
        # No release names a provider key here: the tests add keys directly.
        provider_static_for=lambda model_id: None,
        persist=lambda keyring_file: None,
    )
    vault.add_data_key(MODEL, SystemRandom().token_bytes(32))

    # A genuine (simulated) Nitro machine of the same cloud, booted from another
    # image; its own code replays exactly what an honest node extends.
    foreign = SimulatedNitroTPM(
        seed="foreign", pki=pki, clock=wall, image=_other_images(kit)[which]
    )
    for index, digest in boot_extends(release_measurement(release, MODEL)):
        foreign.pcr_extend(index, digest)
    custody = NodeKeyCustody(random=SystemRandom())

    request = custody.data_key_request(
        foreign, challenge=vault.issue_challenge(custody.static_public), model_id=MODEL
    )
    with pytest.raises(KeyReleaseDenied) as denied:
        vault.release_data_key(request, peer=request.static_public)
    assert denied.value.attestation_check == "pcr_policy"
    assert not custody.has_data_key(MODEL, 1)

    # The client's verifier (and a node link's) refuses the document too.
    document = custody.attest(foreign, nonce=None)
    for policy in (model_policy([release], MODEL), cluster_policy([release])):
        assert policy is not None
        with pytest.raises(PolicyViolation) as refused:
            AttestationVerifier([NitroAuthenticator(anchor)]).verify(
                document,
                kind=DocumentKind.NITRO,
                expectations=Expectations(
                    pcr_policy=policy,
                    max_age_ms=300_000,
                    expected_public_key=noise_key_binding(custody.static_public),
                ),
                now_ms=NOW_MS,
            )
        assert refused.value.check.value == "pcr_policy"
