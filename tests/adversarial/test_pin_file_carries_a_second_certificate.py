"""Attack: the pin file holds the genuine ingress's certificate and then the operator's.

The ``tls cert:`` a client pins comes from whoever runs the cluster. The
operator writes the genuine ingress's certificate first and a certificate of
their own proxy after it. ``verify_ingress`` reads the first one and finds
it bound by the genuine document the proxy relays; a TLS context built from
the whole file trusts the proxy's certificate too, so the client would then
talk to the proxy, under a check that passed, and send it every prompt in a
TLS session the operator terminates. A pin is one certificate: anything more
is refused before a connection is made.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from _ingress_attestation import attested_ingress, boot_ingress
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mantle import IngressCheck, IngressRefused, pinned_tls_context
from nodes.https import generate_tls_identity


def _genuine_ingress_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) and its SPKI, standing for the genuine
    ingress's. Its subject differs from the proxy's: the operator names their
    proxy's certificate so that OpenSSL does not mistake one for the other's
    issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "the genuine ingress")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cert.public_bytes(serialization.Encoding.PEM), spki


def test_a_pin_with_a_second_certificate_is_refused(tmp_path: Path) -> None:
    node = boot_ingress(tmp_path)
    genuine_pem, genuine_spki = _genuine_ingress_certificate()

    def relayed(nonce: bytes, proxy_spki: bytes) -> bytes:
        # The genuine ingress answers the client's nonce, binding its own key.
        return node.document(nonce, genuine_spki)

    with attested_ingress(tmp_path, node, relayed) as proxy:
        pin_file = genuine_pem + proxy.cert_pem
        with pytest.raises(IngressRefused) as refused:
            proxy.verify(pin_file)
        # Nothing was asked of the proxy.
        assert proxy.nonces == []
    assert refused.value.check is IngressCheck.TLS_CERT


def test_a_pin_trusts_its_one_certificate_and_nothing_else() -> None:
    genuine = generate_tls_identity()
    other = generate_tls_identity()
    # Text around the one certificate (a comment, in any encoding) is no
    # certificate: the context trusts exactly the one, and nothing crashes.
    for pin in (
        genuine.cert_pem + "# the ingress's certificate \u00e9\n".encode(),
        b"\xff\xfe\n" + genuine.cert_pem,
    ):
        assert pinned_tls_context(pin).cert_store_stats()["x509"] == 1
    for pin in (genuine.cert_pem + other.cert_pem, b"", b"\xff" * 64):
        with pytest.raises(IngressRefused) as refused:
            pinned_tls_context(pin)
        assert refused.value.check is IngressCheck.TLS_CERT
