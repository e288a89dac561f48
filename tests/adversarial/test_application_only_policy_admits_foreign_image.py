"""Attack: have keys or links decided under a policy pinning only the application registers.

The policy builders only make policies that pin the node image's platform
registers (PCR 4, 7, 12) with the application registers (8, 13, 14). But a
policy can also come from elsewhere: a policy file handed to ``mantle-node
model add`` (a provider writes one from the release's published values), or a
keys node's or a link's policy lookup. An entry pinning only 8, 13 and 14 is
satisfied by any machine, on any image, that extended the published event
digests. Before the fix each of these places accepted such a policy; now each
refuses it -- the keys node denies the key, the link verifier raises, and
``model add`` seals nothing.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from _custody_kit import MODEL, WEIGHTS, CustodyCloud

from actors.attestation import Evidence, PeerAttestationVerifier
from actors.key_custody import Denial, KeyReleaseDenied
from nodes.cli import main
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    NitroAuthenticator,
    PcrPolicy,
    PcrRelease,
    TrustAnchor,
)
from protocol.measurement import APPLICATION_PCRS, MissingPlatformRegisters, model_policy


def _application_only(policy: PcrPolicy) -> PcrPolicy:
    """The same entries with only the application registers kept."""
    return PcrPolicy(
        releases=tuple(
            PcrRelease(entry.name, tuple(p for p in entry.pcrs if p[0] in APPLICATION_PCRS))
            for entry in policy.releases
        )
    )


def test_a_keys_node_with_an_application_only_policy_releases_nothing(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    genuine = model_policy([cloud.release], MODEL)
    assert genuine is not None
    cloud.vault = cloud.open_vault(
        cloud.stored[-1], policy_for=lambda model_id: _application_only(genuine)
    )
    cloud.vault.add_data_key(MODEL, bytes(32))
    tpm, custody = cloud.inference_node("inference")
    request = cloud.request(tpm, custody)
    with pytest.raises(KeyReleaseDenied) as denied:
        cloud.grant(request, custody)
    assert denied.value.denial is Denial.UNMEASURED_POLICY


def test_a_link_verifier_with_an_application_only_policy_admits_nobody(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    genuine = model_policy([cloud.release], MODEL)
    assert genuine is not None
    tpm, custody = cloud.inference_node("peer")
    nonce = bytes(range(32))
    verifier = PeerAttestationVerifier(
        verifier=AttestationVerifier(
            [NitroAuthenticator(TrustAnchor.from_der(cloud.pki.root_der))]
        ),
        policy=_application_only(genuine),
        clock=cloud.wall,
    )
    evidence = Evidence(DocumentKind.NITRO, custody.attest(tpm, nonce=nonce))
    with pytest.raises(MissingPlatformRegisters):
        verifier(custody.static_public, evidence, nonce)


def test_model_add_refuses_an_application_only_policy_file(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    genuine = model_policy([cloud.release], MODEL)
    assert genuine is not None
    (tmp_path / "policy.json").write_text(_application_only(genuine).to_json())
    (tmp_path / "keys.cbor").write_bytes(cloud.keys_node.document)
    (tmp_path / "root.pem").write_bytes(cloud.pki.root_pem())
    (tmp_path / "model.gguf").write_bytes(WEIGHTS)
    assert main(["model", "provider-key", str(tmp_path / "provider.key")]) == 0
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        status = main(
            [
                "model", "add", str(tmp_path / "model.gguf"), "--model-id", MODEL,
                "--store", str(tmp_path / "store"),
                "--keys-document", str(tmp_path / "keys.cbor"),
                "--keys-static", cloud.keys_static.hex(),
                "--keys-policy", str(tmp_path / "policy.json"),
                "--trust-root", str(tmp_path / "root.pem"),
                "--provider-key", str(tmp_path / "provider.key"),
            ]
        )  # fmt: skip
    assert status == 1
    assert "keys policy refused" in stderr.getvalue()
    assert not (tmp_path / "store").exists()
