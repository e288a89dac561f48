"""Attack: the operator hands the client a proxy's certificate and relays the real document.

The ``tls cert:`` a client pins comes from whoever runs the cluster. An
operator who wants to read prompts terminates TLS on a proxy of their own
(the client pins the proxy's certificate, so TLS succeeds) and forwards
``/v1/attestation`` to the genuine ingress, whose document is perfectly
genuine: right root, right release, the client's own nonce. What it binds is
the genuine ingress's TLS key, not the proxy's, so the client refuses
(``user_data``) before it sends a prompt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _ingress_attestation import attested_ingress, boot_ingress

from nodes.https import generate_tls_identity
from protocol.attestation import AttestationError, Check


def test_a_genuine_document_for_another_tls_key_is_refused(tmp_path: Path) -> None:
    node = boot_ingress(tmp_path)
    genuine_ingress_key = generate_tls_identity().spki_der

    def relayed(nonce: bytes, proxy_spki: bytes) -> bytes:
        # The genuine ingress answers the client's nonce, binding its own key.
        return node.document(nonce, genuine_ingress_key)

    with attested_ingress(tmp_path, node, relayed) as proxy:
        with pytest.raises(AttestationError) as refused:
            proxy.verify()
        # The client asked for the document and nothing else.
        assert len(proxy.nonces) == 1
        assert proxy.server.running.dispatcher.submissions == []
    assert refused.value.check is Check.USER_DATA
