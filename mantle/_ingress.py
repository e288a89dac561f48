"""Checking an ingress node before talking to it over its OpenAI-compatible API.

An ingress node serves HTTPS with a TLS key it generated at boot and never
wrote out; its attestation document binds that key
(:func:`protocol.attestation.tls_key_binding` of the certificate's
SubjectPublicKeyInfo, in ``user_data``). A client that pins the certificate
(``tls cert:`` of ``mantle-node dev``) therefore knows, once
:func:`verify_ingress` passed, that the key at the other end of every later
TLS connection it makes with that pin belongs to a node that:

* chains to the pinned attestation root and signed this document;
* answered the client's own fresh nonce (so the document is not a replay);
* shows the PCRs of a release the client verified itself (signed by the
  release root it pins, included in the log under the log key it pins, at or
  above its release floor): the node image's platform registers together with
  Mantle's application registers;
* generated the very TLS key the client pinned.

Any failure raises: :class:`~protocol.attestation.AttestationError` (its
``check`` names the failed step) for the document, :class:`IngressRefused`
(``check``: :class:`IngressCheck`) for everything around it. There is no
switch that skips a step.

The pin and the server are the operator's to hand over, so both are
treated as hostile until checked: a pin is exactly one certificate (a
second one would be trusted by the TLS context without being the one the
document is checked to bind); the URL is ``https://`` (a plain one would
make a "verified" URL no pin protects); the answer is read up to its cap and
no further, uncompressed, without following redirects, and the whole
exchange within ``deadline_s`` (a server that drips its answer never trips
a per-read timeout).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import anyio
import httpx2
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from actors.seams.clock import WallClock
from actors.seams.random import Random
from mantle._trust import TrustPins
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    VerifiedAttestation,
    tls_key_binding,
)
from protocol.attestation.roots import AWS_NITRO_ROOT_SHA256
from protocol.measurement import cluster_policy
from protocol.release import VerifiedRelease

#: The client's nonce for the ingress's document (the route takes 32 to 64 bytes).
NONCE_BYTES: Final = 32
#: A document older than this is refused even with the right nonce (the
#: nonce already proves freshness; this bounds a node clock that lies).
DEFAULT_MAX_AGE_S: Final = 300.0
#: Upper bound on the attestation route's JSON answer (a document is < 16 KiB).
MAX_ATTESTATION_RESPONSE_BYTES: Final = 64 * 1024
#: How long the whole attestation exchange may take (the node's TPM answers
#: in well under a second; a queue of clients may hold it a few more).
DEFAULT_DEADLINE_S: Final = 30.0


class IngressCheck(enum.StrEnum):
    """What around the document failed (:attr:`IngressRefused.check`)."""

    #: The pinned TLS certificate is not exactly one PEM certificate.
    TLS_CERT = "tls.cert"
    #: The ingress's URL is not an ``https://`` URL.
    URL = "url"
    #: The attestation route did not answer 200.
    HTTP_STATUS = "http.status"
    #: The answer is not the route's JSON shape (too large, compressed, or
    #: not JSON naming a base64 document).
    RESPONSE = "response"
    #: The exchange did not end within its deadline.
    TIMEOUT = "timeout"


class IngressRefused(Exception):
    """The ingress could not be checked; nothing was sent to it."""

    def __init__(self, check: IngressCheck, detail: str) -> None:
        super().__init__(f"ingress refused ({check.value}): {detail}")
        self.check = check


@dataclass(frozen=True, slots=True)
class VerifiedIngress:
    """What :func:`verify_ingress` proved about an ingress node."""

    url: str
    attestation: VerifiedAttestation
    release: VerifiedRelease
    #: SHA-256 of the pinned certificate's SubjectPublicKeyInfo.
    tls_spki_sha256: bytes
    #: The attestation root is not AWS's Nitro root: a development cluster on
    #: simulated TPMs, which proves the code paths and nothing about hardware.
    simulated: bool


def pinned_tls_context(cert_pem: bytes) -> ssl.SSLContext:
    """A TLS context that accepts only the certificate ``cert_pem`` (and the key
    in it): the ingress's self-signed certificate, pinned. ``cert_pem`` must
    hold exactly one certificate; only that one is trusted."""
    certificate = _one_certificate(cert_pem)
    context = ssl.create_default_context(cadata=certificate.public_bytes(Encoding.DER))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _one_certificate(cert_pem: bytes) -> x509.Certificate:
    """The one certificate of a pin; a pin holding none or several is refused
    (the TLS context would trust every one, the check would read the first)."""
    certificates: list[x509.Certificate] = []
    if isinstance(cert_pem, bytes):
        try:
            certificates = x509.load_pem_x509_certificates(cert_pem)
        except ValueError:
            certificates = []
    if len(certificates) != 1:
        raise IngressRefused(IngressCheck.TLS_CERT, "a pin is exactly one PEM certificate")
    return certificates[0]


def _spki_of(cert_pem: bytes) -> bytes:
    return (
        _one_certificate(cert_pem)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )


async def verify_ingress(
    http: httpx2.AsyncClient,
    url: str,
    *,
    pins: TrustPins,
    release: VerifiedRelease,
    tls_cert_pem: bytes,
    random: Random,
    clock: WallClock,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> VerifiedIngress:
    """Check the ingress at ``url`` as described in the module docstring.

    ``url`` must be ``https://``; ``http`` must use :func:`pinned_tls_context`
    of ``tls_cert_pem`` (so the document is fetched from the key it is
    checked to bind); the document must chain to ``pins.attestation_root``;
    ``release`` is what :func:`mantle.client_release_view` verified against
    the same pins. The exchange ends within ``deadline_s``.
    """
    spki = _spki_of(tls_cert_pem)
    if not _is_https(url):
        raise IngressRefused(IngressCheck.URL, "the ingress is reached over https:// only")
    nonce = random.token_bytes(NONCE_BYTES)
    status: int | None = None
    body: bytes | None = None
    with anyio.move_on_after(deadline_s):
        status, body = await _fetch_answer(http, url.rstrip("/") + "/v1/attestation", nonce.hex())
    if status is None:
        raise IngressRefused(IngressCheck.TIMEOUT, "no answer within the deadline")
    if status != 200:
        raise IngressRefused(IngressCheck.HTTP_STATUS, f"HTTP {status}")
    if body is None:
        raise IngressRefused(IngressCheck.RESPONSE, "answer too large or compressed")
    document = _document_from(body)
    verifier = AttestationVerifier([NitroAuthenticator(pins.attestation_root)])
    verified = verifier.verify(
        document,
        kind=DocumentKind.NITRO,
        expectations=Expectations(
            pcr_policy=cluster_policy([release]),
            max_age_ms=int(max_age_s * 1000),
            expected_nonce=nonce,
            expected_user_data=tls_key_binding(spki),
        ),
        now_ms=clock.wall_ms(),
    )
    return VerifiedIngress(
        url=url,
        attestation=verified,
        release=release,
        tls_spki_sha256=hashlib.sha256(spki).digest(),
        simulated=pins.attestation_root.sha256 != AWS_NITRO_ROOT_SHA256,
    )


def _is_https(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname)


async def _fetch_answer(
    http: httpx2.AsyncClient, url: str, nonce_hex: str
) -> tuple[int, bytes | None]:
    """The route's status and body; the body ``None`` if it is larger than
    :data:`MAX_ATTESTATION_RESPONSE_BYTES` or content-encoded. Reads no
    more than the cap (and a chunk) whatever the server sends."""
    async with http.stream(
        "GET",
        url,
        params={"nonce": nonce_hex},
        headers={"Accept-Encoding": "identity"},
        follow_redirects=False,
    ) as response:
        if response.status_code != 200:
            return response.status_code, None
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            return 200, None
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_ATTESTATION_RESPONSE_BYTES:
                return 200, None
        return 200, bytes(body)


def _document_from(body: bytes) -> bytes:
    """The document in the route's JSON answer, or :class:`IngressRefused`."""
    if len(body) > MAX_ATTESTATION_RESPONSE_BYTES:
        raise IngressRefused(IngressCheck.RESPONSE, "answer too large")
    document: bytes | None = None
    try:
        parsed = json.loads(body)
        encoded = parsed.get("document") if isinstance(parsed, dict) else None
        if isinstance(encoded, str):
            document = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error, RecursionError):
        # RecursionError: an answer nested deeper than the parser recurses.
        document = None
    if not document:
        # Raised outside the handler, and without quoting the answer.
        raise IngressRefused(IngressCheck.RESPONSE, "no base64 document in the answer")
    return document
