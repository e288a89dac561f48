"""A node that attests with TPM 2.0 quotes (swtpm) gets its data key from a keys node.

A quote carries no time: its freshness is the keys node's single-use, short-lived
challenge, which the quote's qualifying data binds. Key release used to hold every
document to a maximum age as well, which refused every quote as stale.
"""

from __future__ import annotations

from pathlib import Path

from _custody_kit import MODEL, CustodyCloud
from _release_kit import NOW
from _swtpm import Swtpm, power_on_image, require_swtpm

from nodes.boot import measured_boot
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    NitroAuthenticator,
    TrustAnchor,
)
from protocol.attestation import tpm2_quote as quote


def test_a_quote_attested_node_gets_its_data_key(tmp_path: Path) -> None:
    require_swtpm()
    from nodes.tpm import TpmDeviceBackend

    cloud = CustodyCloud(tmp_path / "cloud")
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(32))
    swtpm = Swtpm(tmp_path / "swtpm")
    swtpm.start()
    device = TpmDeviceBackend(swtpm.tcti)
    try:
        power_on_image(device)  # the machine booted the released image
        node = measured_boot(
            cloud.kit.boot_inputs(cloud.files, MODEL, tmp_path / "node-state"),
            tpm=device,
            random=SystemRandom(),
            now=NOW,
        )
        trust = quote.QuoteTrust.from_ak_public_keys([device.attestation_key_public()])
        vault = cloud.open_vault(
            cloud.stored[-1],
            verifier=AttestationVerifier(
                [
                    NitroAuthenticator(TrustAnchor.from_der(cloud.pki.root_der)),
                    quote.Tpm2QuoteAuthenticator(trust),
                ]
            ),
        )
        request = node.custody.data_key_request(
            device,
            challenge=vault.issue_challenge(node.custody.static_public),
            model_id=MODEL,
            evidence_kind=DocumentKind.TPM2_QUOTE,
        )
        grant = vault.release_data_key(request, peer=node.custody.static_public)
        assert node.custody.accept_grant(request, grant, keys_node_static=cloud.keys_static) == 1
    finally:
        device.close()
        swtpm.stop()
