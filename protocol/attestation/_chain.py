"""Certificate chain checks from the pinned root down to the signing certificate.

Nitro chains are root -> regional -> zonal -> instance -> signing
certificate, all ECDSA P-384 with SHA-384. ``cryptography``'s
``x509.verification`` targets WebPKI server certificates, so the RFC 5280
rules that matter here are applied explicitly:

* the bundle starts with the pinned root, byte for byte;
* each certificate names the previous one's subject as its issuer and carries
  a valid ecdsa-with-SHA384 signature by the previous one's key;
* every certificate is inside its validity period at the verification time;
* every certificate above the signing one is a CA (basicConstraints cA=TRUE,
  keyUsage keyCertSign) whose pathLenConstraint admits the CAs below it;
* the signing certificate is not a CA and has keyUsage digitalSignature;
* no certificate carries a critical extension this verifier does not know.

Caching. Parsing and signature checks depend only on the certificate bytes,
so their outcome for a *prefix* of a chain (the root and the certificates
after it) can be remembered, keyed by a running SHA-256 over the
certificates' DER hashes. Everything that depends on the time or on a
certificate's position (validity, CA role, path length, key usage) is
re-evaluated from the cached facts on every verification, so a cached chain
expires exactly as an uncached one does. Only successful steps are cached.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from protocol.attestation._errors import Check, ConfigurationError, UntrustedChain

#: Root, up to six intermediates, and the signing certificate.
MAX_CHAIN_LENGTH = 8
_KNOWN_CRITICAL = frozenset({ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE})
_ES384 = ec.ECDSA(hashes.SHA384())
# ``cryptography`` parses certificate fields lazily, and its accessors raise
# assorted types on malformed input (ValueError, TypeError for impossible name
# attributes, UnsupportedAlgorithm for unknown key types, InvalidVersion,
# DuplicateExtension).
# Each of them means "this certificate is malformed", found by fuzzing
# genuine documents with bit flips.
_PARSE_FAILURES = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What verification needs from one certificate, extracted once."""

    der_sha256: bytes
    subject: x509.Name
    public_key: ec.EllipticCurvePublicKey
    not_before_ms: int
    not_after_ms: int
    #: ``None`` when the certificate has no basicConstraints extension.
    is_ca: bool | None
    path_length: int | None
    #: ``None`` when the certificate has no keyUsage extension.
    key_cert_sign: bool | None
    digital_signature: bool | None


def _position_name(index: int, length: int) -> str:
    if index == 0:
        return "root"
    if index == length - 1:
        return "signing certificate"
    return f"intermediate {index}"


def _parse(der: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except _PARSE_FAILURES:
        pass
    # Raised outside the handler: the parser's exception stays behind.
    raise UntrustedChain(Check.CERTIFICATE, f"{where} is not a DER certificate")


def _facts(cert: x509.Certificate, der: bytes, where: str) -> tuple[x509.Name, CertificateFacts]:
    """The certificate's issuer name and facts; ``cryptography`` parses fields
    lazily, so any malformed field surfaces here as a typed error."""
    try:
        return _extract(cert, der, where)
    except UntrustedChain:
        raise
    except _PARSE_FAILURES:
        pass
    raise UntrustedChain(Check.CERTIFICATE, f"{where} has a malformed field")


def _extract(cert: x509.Certificate, der: bytes, where: str) -> tuple[x509.Name, CertificateFacts]:
    if cert.version is not x509.Version.v3:
        raise UntrustedChain(Check.CERTIFICATE, f"{where} is not an X.509 v3 certificate")
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
        raise UntrustedChain(Check.CERTIFICATE, f"{where} is not signed with ecdsa-with-SHA384")
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP384R1
    ):
        raise UntrustedChain(Check.CERTIFICATE, f"{where} key is not ECDSA P-384")
    is_ca: bool | None = None
    path_length: int | None = None
    key_cert_sign: bool | None = None
    digital_signature: bool | None = None
    for extension in cert.extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints):
            is_ca, path_length = value.ca, value.path_length
        elif isinstance(value, x509.KeyUsage):
            key_cert_sign, digital_signature = value.key_cert_sign, value.digital_signature
        elif extension.critical and extension.oid not in _KNOWN_CRITICAL:
            raise UntrustedChain(Check.CERTIFICATE, f"{where} has an unknown critical extension")
    facts = CertificateFacts(
        der_sha256=hashlib.sha256(der).digest(),
        subject=cert.subject,
        public_key=public_key,
        not_before_ms=int(cert.not_valid_before_utc.timestamp()) * 1000,
        not_after_ms=int(cert.not_valid_after_utc.timestamp()) * 1000,
        is_ca=is_ca,
        path_length=path_length,
        key_cert_sign=key_cert_sign,
        digital_signature=digital_signature,
    )
    return cert.issuer, facts


class TrustAnchor:
    """A pinned root certificate (configuration, not something a document picks)."""

    __slots__ = ("der", "facts", "sha256")

    def __init__(self, der: bytes) -> None:
        cert = _parse(der, "pinned root")
        self.der = der
        _, self.facts = _facts(cert, der, "pinned root")
        self.sha256 = self.facts.der_sha256

    @classmethod
    def from_pem(cls, pem: bytes, *, expected_sha256: bytes | None = None) -> TrustAnchor:
        """Load a PEM root; with ``expected_sha256`` also pin its DER hash."""
        der: bytes | None = None
        with contextlib.suppress(ValueError):
            der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
        if der is None:
            raise ConfigurationError("root is not a PEM certificate")
        return cls.from_der(der, expected_sha256=expected_sha256)

    @classmethod
    def from_der(cls, der: bytes, *, expected_sha256: bytes | None = None) -> TrustAnchor:
        """Load a DER root; with ``expected_sha256`` also pin its DER hash."""
        refusal: UntrustedChain | None = None
        try:
            anchor = cls(der)
        except UntrustedChain as exc:
            refusal = exc
        if refusal is not None:
            raise ConfigurationError(f"root is unusable: {refusal.detail}")
        if expected_sha256 is not None and anchor.sha256 != expected_sha256:
            raise ConfigurationError("root certificate hash differs from the pin")
        return anchor


class ChainCache:
    """Remembers verified chain prefixes (see the module docstring for why this is safe).

    Bounded (least recently used entries go first) and meant for one verifier
    in one task; it takes no lock, so do not share one across threads.
    """

    __slots__ = ("_entries", "_max_entries", "hits", "misses")

    def __init__(self, max_entries: int = 512) -> None:
        if max_entries < 1:
            raise ValueError("a chain cache holds at least one entry")
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[CertificateFacts, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> tuple[CertificateFacts, ...] | None:
        facts = self._entries.get(key)
        if facts is not None:
            self._entries.move_to_end(key)
        return facts

    def put(self, key: bytes, facts: tuple[CertificateFacts, ...]) -> None:
        self._entries[key] = facts
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def verify_chain(
    cabundle: Sequence[bytes],
    signing_der: bytes,
    *,
    anchor: TrustAnchor,
    now_ms: int,
    cache: ChainCache | None = None,
) -> CertificateFacts:
    """Check ``cabundle + [signing_der]`` against ``anchor`` as of ``now_ms``.

    Returns the signing certificate's facts (its key verifies the document).
    """
    if not cabundle:
        raise UntrustedChain(Check.CHAIN_ROOT, "CA bundle is empty")
    if cabundle[0] != anchor.der:
        raise UntrustedChain(Check.CHAIN_ROOT, "CA bundle does not start with the pinned root")
    chain = [*cabundle, signing_der]
    length = len(chain)
    if length > MAX_CHAIN_LENGTH:
        raise UntrustedChain(
            Check.CHAIN_PATH_LENGTH, f"chain has {length} certificates, at most {MAX_CHAIN_LENGTH}"
        )

    # Running prefix keys: key[i] identifies root..chain[i] exactly.
    keys: list[bytes] = []
    running = b""
    for der in chain:
        running = hashlib.sha256(running + hashlib.sha256(der).digest()).digest()
        keys.append(running)

    facts: list[CertificateFacts] = [anchor.facts]
    start = 1
    if cache is not None:
        for index in range(length - 1, 0, -1):
            cached = cache.get(keys[index])
            if cached is not None:
                facts = list(cached)
                start = index + 1
                cache.hits += 1
                break
        else:
            cache.misses += 1

    for index in range(start, length):
        where = _position_name(index, length)
        cert = _parse(chain[index], where)
        issuer = facts[index - 1]
        issuer_name, current = _facts(cert, chain[index], where)
        if issuer_name != issuer.subject:
            raise UntrustedChain(
                Check.CHAIN_ISSUER, f"{where} is not issued by the certificate before it"
            )
        try:
            issuer.public_key.verify(cert.signature, cert.tbs_certificate_bytes, _ES384)
            verified = True
        except (InvalidSignature, ValueError):
            verified = False
        if not verified:
            raise UntrustedChain(
                Check.CHAIN_SIGNATURE, f"{where} signature does not verify under its issuer"
            )
        facts.append(current)
        if cache is not None:
            cache.put(keys[index], tuple(facts))

    _check_positions(facts, now_ms)
    return facts[-1]


def _check_positions(facts: Sequence[CertificateFacts], now_ms: int) -> None:
    length = len(facts)
    for index, cert in enumerate(facts):
        where = _position_name(index, length)
        is_signer = index == length - 1
        if is_signer:
            if cert.is_ca:
                raise UntrustedChain(Check.CHAIN_BASIC_CONSTRAINTS, f"{where} is a CA certificate")
            if not cert.digital_signature:
                raise UntrustedChain(
                    Check.CHAIN_KEY_USAGE, f"{where} lacks keyUsage digitalSignature"
                )
        else:
            if cert.is_ca is not True:
                raise UntrustedChain(
                    Check.CHAIN_BASIC_CONSTRAINTS, f"{where} is not a CA certificate"
                )
            if not cert.key_cert_sign:
                raise UntrustedChain(Check.CHAIN_KEY_USAGE, f"{where} lacks keyUsage keyCertSign")
            # CAs strictly between this one and the signing certificate.
            cas_below = length - 2 - index
            if cert.path_length is not None and cas_below > cert.path_length:
                raise UntrustedChain(
                    Check.CHAIN_PATH_LENGTH,
                    f"{where} allows {cert.path_length} CAs below it, chain has {cas_below}",
                )
        if now_ms < cert.not_before_ms:
            raise UntrustedChain(Check.CHAIN_VALIDITY, f"{where} is not yet valid")
        if now_ms > cert.not_after_ms:
            raise UntrustedChain(Check.CHAIN_VALIDITY, f"{where} has expired")
