"""TPM 2.0 quote evidence: the attestation document kind for generic TPMs.

On EC2 the NitroTPM answers an attestation request with a COSE-signed document
whose certificate chain ends at AWS's root. A generic TPM 2.0 (a server's
discrete TPM, a cloud vTPM, swtpm in tests) has no such document; what it can
produce is ``TPM2_Quote``: a ``TPMS_ATTEST`` structure naming a PCR selection
and the digest of those PCRs, signed by an attestation key (AK) that lives in
the TPM. This module is the pure half of that evidence kind:

* a strict big-endian parser (and encoder) for ``TPMS_ATTEST`` carrying
  ``TPMS_QUOTE_INFO`` and for ``TPMT_SIGNATURE`` (ECDSA), with bounds checks on
  every field and no trailing bytes;
* the envelope that travels where a NitroTPM document would: a canonical CBOR
  map ``{kind: "tpm2-quote", version: 1, attest, signature, ak_public, pcrs,
  nonce, public_key, user_data}``;
* :func:`verify_tpm2_quote`, which checks, in this order: envelope structure
  and sizes, and the signature's scheme and hash (ECDSA with SHA-256/384/512);
  the AK is one the verifier trusts (and an EC key on an accepted curve); the signature over the raw
  ``attest`` bytes under that AK; ``magic == TPM_GENERATED_VALUE`` and
  ``type == TPM_ST_ATTEST_QUOTE``; ``extraData`` equals the qualifying data
  computed from the envelope's ``nonce``, ``public_key`` and ``user_data``;
  the nonce equals the one the verifier issued; the PCR selection is exactly
  the reported SHA-384 PCRs and ``pcrDigest`` equals the digest recomputed
  from the reported values.

Binding. A quote has one caller-chosen field, ``extraData`` (at most 64
bytes), where a NitroTPM document has ``nonce``, ``public_key`` and
``user_data`` (up to 1024 bytes each). The quote therefore carries
``extraData = SHA-384(domain || nonce || public_key || user_data)`` (each
field length-prefixed, absent fields distinguished from empty ones) and the
envelope carries the three fields in the clear; the verifier recomputes the
digest, so the signature covers them exactly as the COSE signature does for a
NitroTPM document.

Trust model, stated plainly. The signature proves only that whoever holds the
AK's private key signed these PCR values. That the AK lives in a genuine TPM
is established outside this module:

* In tests and single-operator deployments the verifier pins the AK public
  keys it accepts (:class:`QuoteTrust`), enrolled out of band.
* In production on generic TPM hardware the AK must be certified through the
  TCG credential-activation protocol: verify the EK certificate chain to the
  TPM vendor's root, then ``TPM2_MakeCredential``/``TPM2_ActivateCredential``
  proves the AK is resident in the same TPM as that EK, after which an
  enrolment service issues the AK a certificate (or adds it to the pinned
  set). That enrolment service is not implemented here.
* On EC2 the NitroTPM document is the stronger root and this kind is not
  needed: the node sends the NitroTPM document itself.

A quote carries no wall-clock time (``clockInfo.clock`` counts milliseconds of
TPM uptime and can be reset), so freshness is by nonce only.

In the shared verifier this is the :attr:`DocumentKind.TPM2_QUOTE` kind:
:class:`Tpm2QuoteAuthenticator` authenticates (everything above except the
nonce comparison) and :func:`protocol.attestation.appraise` applies the
shared checks. Every rejection is an :class:`AttestationError` of the shared
categories whose ``check`` names the failed check (``attestation_key``,
``signature_algorithm``, ``signature``, ``quote_magic``, ``quote_type``,
``qualifying_data``, ``nonce``, ``pcr_selection``, ``pcr_digest``, or the
shared ``size``/``cbor``/``payload_field``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import ClassVar, Final

import cbor2
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from protocol.attestation._cbor import decode_strict
from protocol.attestation._errors import (
    AttestationError,
    BadSignature,
    BindingMismatch,
    Check,
    MalformedEvidence,
    StaleEvidence,
    UntrustedChain,
)
from protocol.attestation._evidence import AttestedClaims, DocumentKind

__all__ = [
    "KIND",
    "MAX_DOCUMENT_SIZE",
    "PCR_VALUE_SIZE",
    "QUALIFYING_DATA_DOMAIN",
    "TPM_GENERATED_VALUE",
    "TPM_ST_ATTEST_QUOTE",
    "EcdsaSignature",
    "MalformedQuote",
    "PcrSelection",
    "QuoteAttest",
    "QuoteDocument",
    "QuoteError",
    "QuoteMagicMismatch",
    "QuoteNonceMismatch",
    "QuotePcrDigestMismatch",
    "QuotePcrSelectionMismatch",
    "QuoteQualifyingDataMismatch",
    "QuoteSignatureInvalid",
    "QuoteTrust",
    "QuoteTypeMismatch",
    "Tpm2QuoteAuthenticator",
    "TpmAlg",
    "UnsupportedQuoteSignature",
    "UntrustedAttestationKey",
    "VerifiedQuote",
    "decode_quote_document",
    "encode_attest",
    "encode_quote_document",
    "encode_signature",
    "parse_attest",
    "parse_signature",
    "pcr_digest",
    "qualifying_data",
    "spki_fingerprint",
    "verify_tpm2_quote",
]

KIND: Final = DocumentKind.TPM2_QUOTE.value
ENVELOPE_VERSION: Final = 1

#: ``TPM_GENERATED_VALUE``: the TPM writes it at the start of every structure it
#: signs, and refuses to sign external data that starts with it with a
#: restricted key, so a valid signature over bytes with this magic proves the
#: TPM produced them.
TPM_GENERATED_VALUE: Final = 0xFF544347
#: ``TPM_ST_ATTEST_QUOTE``: the attest structure is a quote (not a certify,
#: time or audit attestation, which share the envelope but mean other things).
TPM_ST_ATTEST_QUOTE: Final = 0x8018

#: PCR bank of record: SHA-384, as on NitroTPM (docs/architecture.md §8).
PCR_VALUE_SIZE: Final = 48
_PCR_COUNT: Final = 24

#: Upper bounds (TPM 2.0 Library Part 2 sizes, rounded up where the spec lets
#: an implementation choose). A quote ``TPMS_ATTEST`` is well under 1 KiB.
_MAX_NAME: Final = 2 + 64  # TPMU_NAME: hash alg + largest digest
_MAX_DATA: Final = 64  # TPM2B_DATA: sizeof(TPMU_HA)
_MAX_DIGEST: Final = 64  # TPM2B_DIGEST
_MAX_ECC_PARAMETER: Final = 66  # P-521 scalar
_MAX_PCR_SELECTIONS: Final = 16  # HASH_COUNT bound
_MAX_SIZEOF_SELECT: Final = 4  # up to 32 PCRs
_MAX_ATTEST: Final = 2048
_MAX_SIGNATURE: Final = 512
_MAX_AK_PUBLIC: Final = 1024
_MAX_FIELD: Final = 1024  # nonce, public_key, user_data: as in a NitroTPM document
#: Whole envelope; checked before any CBOR decoding.
MAX_DOCUMENT_SIZE: Final = 16 * 1024

QUALIFYING_DATA_DOMAIN: Final = b"mantle/tpm2-quote/qualifying-data/v1\x00"


class TpmAlg(IntEnum):
    """``TPM_ALG_ID`` values this module reads (TCG Algorithm Registry)."""

    SHA1 = 0x0004
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    RSASSA = 0x0014
    RSAPSS = 0x0016
    ECDSA = 0x0018


# SHA-1 is deliberately absent: a quote signed over SHA-1 is refused.
_SIGNATURE_HASHES: Final[Mapping[int, type[hashes.HashAlgorithm]]] = MappingProxyType(
    {
        TpmAlg.SHA256: hashes.SHA256,
        TpmAlg.SHA384: hashes.SHA384,
        TpmAlg.SHA512: hashes.SHA512,
    }
)
_HASHLIB_NAMES: Final[Mapping[int, str]] = MappingProxyType(
    {TpmAlg.SHA256: "sha256", TpmAlg.SHA384: "sha384", TpmAlg.SHA512: "sha512"}
)
_ACCEPTED_CURVES: Final = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


# --------------------------------------------------------------------------- errors


class QuoteError(AttestationError):
    """Base of quote-specific rejections.

    Each subclass is also the shared verifier's category for its failure
    (:class:`MalformedEvidence`, :class:`BadSignature`, ...) and carries the
    :class:`Check` that names it. Details are fixed strings naming a field or
    check, never the bytes under inspection.
    """

    _check: ClassVar[Check]
    _detail: ClassVar[str]

    def __init__(self, detail: str | None = None, *, field: str | None = None) -> None:
        super().__init__(self._check, detail or self._detail, field=field)


class MalformedQuote(QuoteError, MalformedEvidence):
    """Bytes or fields that do not decode as the documented structures."""

    _check = Check.PAYLOAD_FIELD
    _detail = "quote evidence is malformed"


class QuoteMagicMismatch(QuoteError, MalformedEvidence):
    """``TPMS_ATTEST.magic`` is not ``TPM_GENERATED_VALUE``: not TPM-generated."""

    _check = Check.QUOTE_MAGIC
    _detail = "TPMS_ATTEST magic is not TPM_GENERATED_VALUE"


class QuoteTypeMismatch(QuoteError, MalformedEvidence):
    """``TPMS_ATTEST.type`` is not ``TPM_ST_ATTEST_QUOTE``."""

    _check = Check.QUOTE_TYPE
    _detail = "TPMS_ATTEST type is not TPM_ST_ATTEST_QUOTE"


class UnsupportedQuoteSignature(QuoteError, MalformedEvidence):
    """A signature scheme, hash or key type this verifier does not accept."""

    _check = Check.SIGNATURE_ALGORITHM
    _detail = "unsupported signature algorithm"


class UntrustedAttestationKey(QuoteError, UntrustedChain):
    """The attestation key is not one the verifier trusts."""

    _check = Check.ATTESTATION_KEY
    _detail = "attestation key is not trusted"


class QuoteSignatureInvalid(QuoteError, BadSignature):
    """The signature over ``TPMS_ATTEST`` does not verify under the AK."""

    _check = Check.SIGNATURE
    _detail = "signature over TPMS_ATTEST does not verify under the attestation key"


class QuoteQualifyingDataMismatch(QuoteError, BindingMismatch):
    """``extraData`` does not commit to the envelope's nonce, public key and user data."""

    _check = Check.QUALIFYING_DATA
    _detail = "extraData does not match the nonce, public key and user data carried"


class QuoteNonceMismatch(QuoteError, StaleEvidence):
    """The nonce is not the one the verifier issued (stale or replayed evidence)."""

    _check = Check.NONCE
    _detail = "nonce differs from the one issued"


class QuotePcrSelectionMismatch(QuoteError, MalformedEvidence):
    """The quoted PCR selection is not exactly the reported SHA-384 PCRs."""

    _check = Check.PCR_SELECTION
    _detail = "quoted PCR selection differs from the reported PCRs"


class QuotePcrDigestMismatch(QuoteError, BadSignature):
    """``pcrDigest`` differs from the digest of the reported PCR values: the
    reported values are not the ones the TPM signed."""

    _check = Check.PCR_DIGEST
    _detail = "pcrDigest differs from the digest of the reported PCR values"


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class PcrSelection:
    """One ``TPMS_PCR_SELECTION``: a bank and the PCR indices selected in it."""

    hash_alg: int
    indices: tuple[int, ...]
    #: ``sizeofSelect``; kept so that encoding reproduces the TPM's bytes.
    size_of_select: int = 3


@dataclass(frozen=True, slots=True)
class QuoteAttest:
    """A decoded ``TPMS_ATTEST`` whose ``attested`` arm is ``TPMS_QUOTE_INFO``."""

    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    pcr_selections: tuple[PcrSelection, ...]
    pcr_digest: bytes
    magic: int = TPM_GENERATED_VALUE
    attest_type: int = TPM_ST_ATTEST_QUOTE


@dataclass(frozen=True, slots=True)
class EcdsaSignature:
    """A ``TPMT_SIGNATURE`` with ``sigAlg = TPM_ALG_ECDSA``."""

    hash_alg: int
    r: bytes
    s: bytes


@dataclass(frozen=True, slots=True)
class QuoteDocument:
    """The envelope of a ``tpm2-quote`` attestation document."""

    attest: bytes
    signature: bytes
    ak_public: bytes
    pcrs: Mapping[int, bytes]
    nonce: bytes | None
    public_key: bytes | None
    user_data: bytes | None


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """What a verified quote proves (produced only by :func:`verify_tpm2_quote`)."""

    pcrs: Mapping[int, bytes]
    nonce: bytes | None
    public_key: bytes | None
    user_data: bytes | None
    ak_public: bytes
    clock: int
    reset_count: int
    restart_count: int
    firmware_version: int


def spki_fingerprint(spki_der: bytes) -> bytes:
    """SHA-256 of a DER SubjectPublicKeyInfo: how pinned AKs are named."""
    return hashlib.sha256(spki_der).digest()


@dataclass(frozen=True, slots=True)
class QuoteTrust:
    """The attestation keys a verifier accepts, pinned by SPKI fingerprint."""

    pinned_ak_fingerprints: frozenset[bytes]

    @classmethod
    def from_ak_public_keys(cls, spki_ders: Iterable[bytes]) -> QuoteTrust:
        return cls(frozenset(spki_fingerprint(der) for der in spki_ders))

    def trusts(self, spki_der: bytes) -> bool:
        fingerprint = spki_fingerprint(spki_der)
        # Constant-time per comparison; the set of pinned keys is public anyway.
        return any(hmac.compare_digest(fingerprint, pin) for pin in self.pinned_ak_fingerprints)


# --------------------------------------------------------------------------- binary codec


class _Reader:
    """Big-endian reader over TPM marshalled bytes; every read is bounds-checked."""

    __slots__ = ("_data", "_field", "_pos")

    def __init__(self, data: bytes, field: str) -> None:
        self._data = data
        self._field = field
        self._pos = 0

    def fail(self, detail: str) -> MalformedQuote:
        return MalformedQuote(detail, field=self._field)

    def take(self, n: int, what: str) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise self.fail(f"{what} truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def sized(self, limit: int, what: str) -> bytes:
        """A ``TPM2B_*``: 16-bit size then that many bytes, at most ``limit``."""
        size = self.uint(2, what)
        if size > limit:
            raise self.fail(f"{what} too long")
        return self.take(size, what)

    def finish(self, what: str) -> None:
        if self._pos != len(self._data):
            raise self.fail(f"trailing bytes after {what}")


def _sized(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _selection_bits(indices: tuple[int, ...], size_of_select: int) -> bytes:
    bits = bytearray(size_of_select)
    for index in indices:
        bits[index // 8] |= 1 << (index % 8)
    return bytes(bits)


def parse_attest(data: bytes) -> QuoteAttest:
    """Decode a ``TPMS_ATTEST`` that must be a quote.

    Raises :class:`MalformedQuote` on any structural fault,
    :class:`QuoteMagicMismatch` or :class:`QuoteTypeMismatch` on the two
    header checks.
    """
    if len(data) > _MAX_ATTEST:
        raise MalformedQuote("TPMS_ATTEST too long", field="attest")
    reader = _Reader(data, "attest")
    magic = reader.uint(4, "magic")
    if magic != TPM_GENERATED_VALUE:
        raise QuoteMagicMismatch(field="attest")
    attest_type = reader.uint(2, "type")
    if attest_type != TPM_ST_ATTEST_QUOTE:
        raise QuoteTypeMismatch(field="attest")
    qualified_signer = reader.sized(_MAX_NAME, "qualifiedSigner")
    extra_data = reader.sized(_MAX_DATA, "extraData")
    clock = reader.uint(8, "clock")
    reset_count = reader.uint(4, "resetCount")
    restart_count = reader.uint(4, "restartCount")
    safe = reader.uint(1, "safe")
    if safe > 1:
        raise reader.fail("safe is not a TPMI_YES_NO")
    firmware_version = reader.uint(8, "firmwareVersion")
    count = reader.uint(4, "pcrSelect.count")
    if count > _MAX_PCR_SELECTIONS:
        raise reader.fail("too many PCR selections")
    selections: list[PcrSelection] = []
    for _ in range(count):
        hash_alg = reader.uint(2, "pcrSelections.hash")
        size_of_select = reader.uint(1, "pcrSelections.sizeofSelect")
        if size_of_select > _MAX_SIZEOF_SELECT:
            raise reader.fail("pcrSelections.sizeofSelect too large")
        bits = reader.take(size_of_select, "pcrSelections.pcrSelect")
        indices = tuple(
            byte_index * 8 + bit
            for byte_index, byte in enumerate(bits)
            for bit in range(8)
            if byte & (1 << bit)
        )
        selections.append(PcrSelection(hash_alg, indices, size_of_select))
    pcr_digest_value = reader.sized(_MAX_DIGEST, "pcrDigest")
    reader.finish("TPMS_ATTEST")
    return QuoteAttest(
        qualified_signer=qualified_signer,
        extra_data=extra_data,
        clock=clock,
        reset_count=reset_count,
        restart_count=restart_count,
        safe=bool(safe),
        firmware_version=firmware_version,
        pcr_selections=tuple(selections),
        pcr_digest=pcr_digest_value,
        magic=magic,
        attest_type=attest_type,
    )


def encode_attest(attest: QuoteAttest) -> bytes:
    """Marshal a :class:`QuoteAttest` exactly as a TPM does (for tests and tools)."""
    out = bytearray()
    out += attest.magic.to_bytes(4, "big")
    out += attest.attest_type.to_bytes(2, "big")
    out += _sized(attest.qualified_signer)
    out += _sized(attest.extra_data)
    out += attest.clock.to_bytes(8, "big")
    out += attest.reset_count.to_bytes(4, "big")
    out += attest.restart_count.to_bytes(4, "big")
    out += (1 if attest.safe else 0).to_bytes(1, "big")
    out += attest.firmware_version.to_bytes(8, "big")
    out += len(attest.pcr_selections).to_bytes(4, "big")
    for selection in attest.pcr_selections:
        out += selection.hash_alg.to_bytes(2, "big")
        out += selection.size_of_select.to_bytes(1, "big")
        out += _selection_bits(selection.indices, selection.size_of_select)
    out += _sized(attest.pcr_digest)
    return bytes(out)


def parse_signature(data: bytes) -> EcdsaSignature:
    """Decode a ``TPMT_SIGNATURE``; only ECDSA with SHA-256/384/512 is accepted."""
    if len(data) > _MAX_SIGNATURE:
        raise MalformedQuote("TPMT_SIGNATURE too long", field="signature")
    reader = _Reader(data, "signature")
    sig_alg = reader.uint(2, "sigAlg")
    if sig_alg != TpmAlg.ECDSA:
        raise UnsupportedQuoteSignature("only ECDSA quotes are accepted", field="signature")
    hash_alg = reader.uint(2, "signature.hash")
    if hash_alg not in _SIGNATURE_HASHES:
        raise UnsupportedQuoteSignature("signature hash must be SHA-256/384/512", field="signature")
    r = reader.sized(_MAX_ECC_PARAMETER, "signatureR")
    s = reader.sized(_MAX_ECC_PARAMETER, "signatureS")
    reader.finish("TPMT_SIGNATURE")
    return EcdsaSignature(hash_alg=hash_alg, r=r, s=s)


def encode_signature(signature: EcdsaSignature) -> bytes:
    """Marshal an ECDSA ``TPMT_SIGNATURE``."""
    return (
        int(TpmAlg.ECDSA).to_bytes(2, "big")
        + signature.hash_alg.to_bytes(2, "big")
        + _sized(signature.r)
        + _sized(signature.s)
    )


# --------------------------------------------------------------------------- digests


def _optional_field(value: bytes | None) -> bytes:
    if value is None:
        return b"\x00"
    return b"\x01" + len(value).to_bytes(4, "big") + value


def qualifying_data(
    nonce: bytes | None, public_key: bytes | None, user_data: bytes | None
) -> bytes:
    """The 48-byte ``extraData`` a node passes to ``TPM2_Quote``.

    Each field is length-prefixed and flagged present/absent, so no two
    distinct (nonce, public_key, user_data) triples share an encoding.
    """
    digest = hashlib.sha384(QUALIFYING_DATA_DOMAIN)
    for value in (nonce, public_key, user_data):
        digest.update(_optional_field(value))
    return digest.digest()


def pcr_digest(hash_alg: int, pcr_values: Iterable[bytes]) -> bytes:
    """The TPM's ``pcrDigest``: hash (of the signing scheme) over the selected
    PCR values concatenated in selection order."""
    name = _HASHLIB_NAMES.get(hash_alg)
    if name is None:
        raise UnsupportedQuoteSignature("PCR digest hash must be SHA-256/384/512")
    digest = hashlib.new(name)
    for value in pcr_values:
        digest.update(value)
    return digest.digest()


# --------------------------------------------------------------------------- envelope

_ENVELOPE_KEYS: Final = frozenset(
    {
        "kind",
        "version",
        "attest",
        "signature",
        "ak_public",
        "pcrs",
        "nonce",
        "public_key",
        "user_data",
    }
)


def encode_quote_document(document: QuoteDocument) -> bytes:
    """Canonical CBOR of the envelope (deterministic: same fields, same bytes)."""
    payload = {
        "kind": KIND,
        "version": ENVELOPE_VERSION,
        "attest": document.attest,
        "signature": document.signature,
        "ak_public": document.ak_public,
        "pcrs": dict(document.pcrs),
        "nonce": document.nonce,
        "public_key": document.public_key,
        "user_data": document.user_data,
    }
    encoded = cbor2.dumps(payload, canonical=True)
    # Refuse to produce what the decoder would refuse.
    decode_quote_document(encoded)
    return encoded


def _bytes_field(payload: Mapping[str, object], key: str, limit: int) -> bytes:
    value = payload[key]
    if not isinstance(value, bytes):
        raise MalformedQuote("not a byte string", field=key)
    if len(value) > limit:
        raise MalformedQuote(f"longer than {limit} bytes", field=key)
    return value


def _optional_bytes_field(payload: Mapping[str, object], key: str, limit: int) -> bytes | None:
    if payload[key] is None:
        return None
    return _bytes_field(payload, key, limit)


def decode_quote_document(data: bytes) -> QuoteDocument:
    """Strictly decode the envelope: exact key set, types, sizes, canonical CBOR."""
    if not data or len(data) > MAX_DOCUMENT_SIZE:
        raise MalformedEvidence(
            Check.SIZE, f"quote evidence must be 1 to {MAX_DOCUMENT_SIZE} bytes"
        )
    payload = decode_strict(data, what="quote evidence")
    if not isinstance(payload, dict):
        raise MalformedQuote("envelope is not a map")
    if set(payload) != _ENVELOPE_KEYS:
        raise MalformedQuote("envelope keys differ from the documented set")
    if payload["kind"] != KIND:
        raise MalformedQuote("kind is not tpm2-quote", field="kind")
    version = payload["version"]
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise MalformedQuote("unsupported envelope version", field="version")
    pcrs_raw = payload["pcrs"]
    if not isinstance(pcrs_raw, dict) or not 0 < len(pcrs_raw) <= _PCR_COUNT:
        raise MalformedQuote("pcrs must map 1 to 24 PCRs", field="pcrs")
    pcrs: dict[int, bytes] = {}
    for index, value in pcrs_raw.items():
        if type(index) is not int or not 0 <= index < _PCR_COUNT:
            raise MalformedQuote("PCR index out of 0-23", field="pcrs")
        if not isinstance(value, bytes) or len(value) != PCR_VALUE_SIZE:
            raise MalformedQuote("PCR value is not 48 bytes", field="pcrs")
        pcrs[index] = value
    document = QuoteDocument(
        attest=_bytes_field(payload, "attest", _MAX_ATTEST),
        signature=_bytes_field(payload, "signature", _MAX_SIGNATURE),
        ak_public=_bytes_field(payload, "ak_public", _MAX_AK_PUBLIC),
        pcrs=MappingProxyType(dict(sorted(pcrs.items()))),
        nonce=_optional_bytes_field(payload, "nonce", _MAX_FIELD),
        public_key=_optional_bytes_field(payload, "public_key", _MAX_FIELD),
        user_data=_optional_bytes_field(payload, "user_data", _MAX_FIELD),
    )
    # One encoding per document: tags, indefinite lengths, non-minimal integers
    # and unsorted keys are all refused, so a signature-irrelevant re-encoding
    # cannot smuggle a second meaning past a cache or a log hash.
    if cbor2.dumps(payload, canonical=True) != data:
        raise MalformedEvidence(Check.CBOR, "quote evidence is not canonical CBOR")
    return document


# --------------------------------------------------------------------------- verification


def _load_attestation_key(spki_der: bytes) -> ec.EllipticCurvePublicKey:
    refusal: QuoteError | None = None
    try:
        key = serialization.load_der_public_key(spki_der)
    except UnsupportedAlgorithm:
        refusal = UnsupportedQuoteSignature(
            "attestation key type is not supported", field="ak_public"
        )
    except (ValueError, TypeError):
        refusal = MalformedQuote("not a DER SubjectPublicKeyInfo", field="ak_public")
    if refusal is not None:
        # Raised outside the handler: the parser's exception stays behind.
        raise refusal
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UnsupportedQuoteSignature("attestation key is not an EC key", field="ak_public")
    if not isinstance(key.curve, _ACCEPTED_CURVES):
        raise UnsupportedQuoteSignature(
            "attestation key curve is not P-256/384/521", field="ak_public"
        )
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != spki_der:
        # Pins name DER bytes; two encodings of one key would be two names.
        raise MalformedQuote("not canonical DER", field="ak_public")
    return key


def verify_tpm2_quote(
    data: bytes, trust: QuoteTrust, *, expected_nonce: bytes | None
) -> VerifiedQuote:
    """Verify a ``tpm2-quote`` document and return what it proves.

    ``expected_nonce`` is the nonce the verifier issued; ``None`` skips the
    nonce comparison, for callers that apply their own freshness check to
    :attr:`VerifiedQuote.nonce`. PCR policy and the bound key are the caller's
    to judge from the result.
    """
    document = decode_quote_document(data)
    signature = parse_signature(document.signature)
    if not trust.trusts(document.ak_public):
        raise UntrustedAttestationKey()
    key = _load_attestation_key(document.ak_public)
    der_signature = encode_dss_signature(
        int.from_bytes(signature.r, "big"), int.from_bytes(signature.s, "big")
    )
    try:
        key.verify(
            der_signature, document.attest, ec.ECDSA(_SIGNATURE_HASHES[signature.hash_alg]())
        )
        verified = True
    except InvalidSignature:
        verified = False
    if not verified:
        raise QuoteSignatureInvalid()

    # Only now, with the bytes known to come from the trusted AK, parse deeper.
    attest = parse_attest(document.attest)
    expected_extra = qualifying_data(document.nonce, document.public_key, document.user_data)
    if not hmac.compare_digest(attest.extra_data, expected_extra):
        raise QuoteQualifyingDataMismatch()
    if expected_nonce is not None and (
        document.nonce is None or not hmac.compare_digest(document.nonce, expected_nonce)
    ):
        raise QuoteNonceMismatch()

    if len(attest.pcr_selections) != 1:
        raise QuotePcrSelectionMismatch("exactly one PCR bank must be quoted")
    (selection,) = attest.pcr_selections
    if selection.hash_alg != TpmAlg.SHA384:
        raise QuotePcrSelectionMismatch("quoted PCR bank is not SHA-384")
    if selection.indices != tuple(document.pcrs):
        raise QuotePcrSelectionMismatch()
    recomputed = pcr_digest(signature.hash_alg, (document.pcrs[i] for i in selection.indices))
    if not hmac.compare_digest(attest.pcr_digest, recomputed):
        raise QuotePcrDigestMismatch()

    return VerifiedQuote(
        pcrs=document.pcrs,
        nonce=document.nonce,
        public_key=document.public_key,
        user_data=document.user_data,
        ak_public=document.ak_public,
        clock=attest.clock,
        reset_count=attest.reset_count,
        restart_count=attest.restart_count,
        firmware_version=attest.firmware_version,
    )


# --------------------------------------------------------------------------- shared verifier


class Tpm2QuoteAuthenticator:
    """The :class:`~protocol.attestation.EvidenceAuthenticator` for ``tpm2-quote``.

    Register it with :class:`~protocol.attestation.AttestationVerifier`; the
    shared appraisal then applies the nonce, bound-key, user-data and PCR
    policy checks to the claims returned here. A quote has no wall-clock
    timestamp (``timestamp_ms`` is ``None``), so expectations with
    ``max_age_ms`` refuse it: freshness for quotes is the expected nonce.
    ``root_sha256`` and ``signer_sha256`` are both the fingerprint of the
    pinned AK that signed.
    """

    __slots__ = ("_trust",)

    def __init__(self, trust: QuoteTrust) -> None:
        self._trust = trust

    @property
    def kind(self) -> DocumentKind:
        return DocumentKind.TPM2_QUOTE

    def authenticate(self, evidence: bytes, *, now_ms: int) -> AttestedClaims:
        del now_ms  # nothing here expires: pinned keys carry no validity period
        verified = verify_tpm2_quote(evidence, self._trust, expected_nonce=None)
        fingerprint = spki_fingerprint(verified.ak_public)
        return AttestedClaims(
            kind=DocumentKind.TPM2_QUOTE,
            module_id=f"tpm2-ak-{fingerprint[:8].hex()}",
            timestamp_ms=None,
            pcrs=verified.pcrs,
            public_key=verified.public_key,
            user_data=verified.user_data,
            nonce=verified.nonce,
            root_sha256=fingerprint,
            signer_sha256=fingerprint,
        )
