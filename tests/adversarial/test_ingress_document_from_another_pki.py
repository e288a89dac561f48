"""Attack: answer with a document signed by a certificate authority the operator runs.

Simulated NitroTPMs, or any PKI the operator creates, can produce documents
with every register the release names. The client pins its attestation root
itself and refuses a document that does not chain to it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _ingress_attestation import attested_ingress, boot_ingress

from protocol.attestation import AttestationError, Check


def test_a_document_of_another_pki_is_refused(tmp_path: Path) -> None:
    genuine = boot_ingress(tmp_path / "genuine")
    forged = boot_ingress(tmp_path / "forged", pki_seed="the operator's own CA")
    with (
        attested_ingress(tmp_path, genuine, forged.document) as client,
        pytest.raises(AttestationError) as refused,
    ):
        client.verify()
    assert refused.value.check is Check.CHAIN_ROOT
