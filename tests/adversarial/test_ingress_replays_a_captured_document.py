"""Attack: answer the client's attestation request with a document captured earlier.

A genuine document from the genuine ingress, binding the right TLS key, but
over another client's nonce (captured from an earlier exchange, or produced
before the node was tampered with). The client sends its own fresh nonce
each time and refuses a document over any other (``nonce``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _ingress_attestation import attested_ingress, boot_ingress

from protocol.attestation import AttestationError, Check


def test_a_document_over_an_earlier_nonce_is_refused(tmp_path: Path) -> None:
    node = boot_ingress(tmp_path)
    captured: list[bytes] = []

    def replaying(nonce: bytes, spki: bytes) -> bytes:
        if not captured:
            captured.append(node.document(nonce, spki))
        return captured[0]

    with attested_ingress(tmp_path, node, replaying) as client:
        client.verify()  # the exchange the operator captured
        with pytest.raises(AttestationError) as refused:
            client.verify()
    assert refused.value.check is Check.NONCE
