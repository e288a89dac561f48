"""``mantle.verify_ingress``: an honest ingress passes and shows what it proved."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx2
import pytest
import trio
from _ingress_attestation import attested_ingress, boot_ingress

from mantle import IngressCheck, IngressRefused, pinned_tls_context, verify_ingress
from nodes.random import SystemRandom
from protocol.attestation import noise_key_binding


def test_an_honest_ingress_passes_and_shows_what_it_proved(tmp_path: Path) -> None:
    node = boot_ingress(tmp_path)
    with attested_ingress(tmp_path, node) as client:
        verified = client.verify()
        spki = client.server.running.endpoint.spki_der
    assert verified.release.version == 1
    assert verified.simulated  # the simulated PKI's root is not AWS's
    assert verified.tls_spki_sha256 == hashlib.sha256(spki).digest()
    assert verified.attestation.public_key == noise_key_binding(node.custody.static_public)
    # The document answered this client's own nonce, a fresh one each time.
    assert len(client.nonces) == 1 and len(client.nonces[0]) == 32


def test_each_verification_sends_a_fresh_nonce(tmp_path: Path) -> None:
    node = boot_ingress(tmp_path)
    with attested_ingress(tmp_path, node) as client:
        client.verify()
        client.verify()
    assert len(set(client.nonces)) == 2


def test_a_pin_that_is_not_a_certificate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IngressRefused) as refused:
        pinned_tls_context(b"-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    assert refused.value.check is IngressCheck.TLS_CERT


def test_an_answer_without_a_document_is_refused(tmp_path: Path) -> None:
    node = boot_ingress(tmp_path)
    with attested_ingress(tmp_path, node) as client:

        async def run() -> None:
            pinned = client.cert_pem
            async with httpx2.AsyncClient(verify=pinned_tls_context(pinned)) as http:
                # /v1/models answers 401 without a key: not the attestation route's 200.
                await verify_ingress(
                    http,
                    client.url + "/v1/models?",
                    pins=client.pins,
                    release=client.release,
                    tls_cert_pem=pinned,
                    random=SystemRandom(),
                    clock=client.clock,
                )

        with pytest.raises(IngressRefused) as refused:
            trio.run(run)
    assert refused.value.check is IngressCheck.HTTP_STATUS
