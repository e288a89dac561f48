"""Nitro attestation documents: EC2 NitroTPM, Nitro Enclaves, and the simulator.

Payload (a CBOR map, definite or indefinite length) as AWS specifies it::

    module_id:     text, non-empty
    digest:        "SHA384"
    timestamp:     uint (ms since the Unix epoch), non-zero, 64-bit
    pcrs | nitrotpm_pcrs:  { 1*32 (index 0..31 => bstr .size 48) }
    certificate:   bstr .size (1..1024)   DER, the signing certificate
    cabundle:      [ + bstr .size (1..1024) ]   root first
    ? public_key:  bstr .size (0..1024) / null
    ? user_data:   bstr .size (0..1024) / null
    ? nonce:       bstr .size (0..1024) / null

Nitro Enclaves documents carry ``pcrs`` (16 entries in practice), NitroTPM
documents ``nitrotpm_pcrs`` (24); exactly one must be present. Unknown keys
are refused.

Order of checks (verify before trusting content): size, COSE framing and
algorithm, the payload's map shape, just enough typing of ``certificate`` and
``cabundle`` to build the chain, the chain to the pinned root, the COSE
signature, and only then every other field.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from protocol.attestation._cbor import decode_strict
from protocol.attestation._chain import MAX_CHAIN_LENGTH, ChainCache, TrustAnchor, verify_chain
from protocol.attestation._cose import parse_cose_sign1, raw_to_der_signature
from protocol.attestation._errors import BadSignature, Check, MalformedEvidence
from protocol.attestation._evidence import MAX_EVIDENCE_BYTES, AttestedClaims, DocumentKind
from protocol.attestation._policy import MAX_PCR_INDEX, PCR_VALUE_BYTES

MAX_CERTIFICATE_BYTES = 1024
MAX_USER_FIELD_BYTES = 1024
MAX_MODULE_ID_BYTES = 256
MAX_PCR_COUNT = MAX_PCR_INDEX + 1
DIGEST_SHA384 = "SHA384"
ENCLAVE_PCRS = "pcrs"
NITROTPM_PCRS = "nitrotpm_pcrs"
OPTIONAL_FIELDS = ("public_key", "user_data", "nonce")
REQUIRED_FIELDS = ("module_id", "digest", "timestamp", "certificate", "cabundle")
KNOWN_FIELDS = frozenset((*REQUIRED_FIELDS, *OPTIONAL_FIELDS, ENCLAVE_PCRS, NITROTPM_PCRS))
_ES384 = ec.ECDSA(hashes.SHA384())
_UINT64_LIMIT = 1 << 64


def _field_error(field: str, detail: str) -> MalformedEvidence:
    return MalformedEvidence(Check.PAYLOAD_FIELD, detail, field=field)


def _bounded_bytes(value: object, field: str, *, minimum: int, maximum: int) -> bytes:
    if type(value) is not bytes:
        raise _field_error(field, "is not a byte string")
    if not minimum <= len(value) <= maximum:
        raise _field_error(field, f"is {len(value)} bytes, {minimum} to {maximum} allowed")
    return value


@dataclass(frozen=True, slots=True)
class NitroPayload:
    """A payload whose fields passed type and size checks."""

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs_field: str
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None


def _payload_map(payload: bytes) -> dict[str, object]:
    decoded = decode_strict(payload, what="payload")
    if not isinstance(decoded, dict):
        raise MalformedEvidence(Check.PAYLOAD_FIELD, "payload is not a map")
    for key in decoded:
        if type(key) is not str:
            raise MalformedEvidence(Check.PAYLOAD_FIELD, "payload has a non-text key")
    unknown = set(decoded) - KNOWN_FIELDS
    if unknown:
        # Names only: an unknown key is attacker-chosen text, bounded by the size check.
        raise MalformedEvidence(Check.PAYLOAD_FIELD, f"payload has {len(unknown)} unknown key(s)")
    for field in REQUIRED_FIELDS:
        if field not in decoded:
            raise _field_error(field, "is missing")
    return decoded


def _chain_fields(fields: Mapping[str, object]) -> tuple[bytes, tuple[bytes, ...]]:
    certificate = _bounded_bytes(
        fields["certificate"], "certificate", minimum=1, maximum=MAX_CERTIFICATE_BYTES
    )
    cabundle = fields["cabundle"]
    if not isinstance(cabundle, list):
        raise _field_error("cabundle", "is not an array")
    if not 1 <= len(cabundle) < MAX_CHAIN_LENGTH:
        raise _field_error(
            "cabundle", f"holds {len(cabundle)} certificates, 1 to {MAX_CHAIN_LENGTH - 1} allowed"
        )
    bundle = tuple(
        _bounded_bytes(item, "cabundle", minimum=1, maximum=MAX_CERTIFICATE_BYTES)
        for item in cabundle
    )
    return certificate, bundle


def _remaining_fields(
    fields: Mapping[str, object], certificate: bytes, cabundle: tuple[bytes, ...]
) -> NitroPayload:
    module_id = fields["module_id"]
    if type(module_id) is not str:
        raise _field_error("module_id", "is not text")
    if not 1 <= len(module_id.encode()) <= MAX_MODULE_ID_BYTES:
        raise _field_error("module_id", f"must be 1 to {MAX_MODULE_ID_BYTES} bytes")

    digest = fields["digest"]
    if type(digest) is not str:
        raise _field_error("digest", "is not text")
    if digest != DIGEST_SHA384:
        raise MalformedEvidence(Check.DIGEST, "digest is not SHA384", field="digest")

    timestamp = fields["timestamp"]
    if type(timestamp) is not int:
        raise _field_error("timestamp", "is not an unsigned integer")
    if not 0 < timestamp < _UINT64_LIMIT:
        raise _field_error("timestamp", "is outside 1 to 2**64-1")

    present = [name for name in (ENCLAVE_PCRS, NITROTPM_PCRS) if name in fields]
    if len(present) != 1:
        raise _field_error(
            NITROTPM_PCRS, f"exactly one of pcrs/nitrotpm_pcrs is required, found {len(present)}"
        )
    pcrs_field = present[0]
    raw_pcrs = fields[pcrs_field]
    if not isinstance(raw_pcrs, dict):
        raise _field_error(pcrs_field, "is not a map")
    if not 1 <= len(raw_pcrs) <= MAX_PCR_COUNT:
        raise _field_error(pcrs_field, f"holds {len(raw_pcrs)} PCRs, 1 to {MAX_PCR_COUNT} allowed")
    pcrs: dict[int, bytes] = {}
    for index, value in raw_pcrs.items():
        if type(index) is not int or not 0 <= index <= MAX_PCR_INDEX:
            raise _field_error(pcrs_field, "has an index outside 0-31")
        if type(value) is not bytes or len(value) != PCR_VALUE_BYTES:
            raise _field_error(pcrs_field, f"PCR {index} is not a {PCR_VALUE_BYTES}-byte string")
        pcrs[index] = value

    optional: dict[str, bytes | None] = {}
    for field in OPTIONAL_FIELDS:
        value = fields.get(field)
        optional[field] = (
            None
            if value is None
            else _bounded_bytes(value, field, minimum=0, maximum=MAX_USER_FIELD_BYTES)
        )
    return NitroPayload(
        module_id=module_id,
        digest=digest,
        timestamp_ms=timestamp,
        pcrs_field=pcrs_field,
        pcrs=types.MappingProxyType(dict(sorted(pcrs.items()))),
        certificate=certificate,
        cabundle=cabundle,
        public_key=optional["public_key"],
        user_data=optional["user_data"],
        nonce=optional["nonce"],
    )


@dataclass(frozen=True, slots=True)
class AuthenticatedNitroDocument:
    """A document whose chain and signature verified, with all fields typed."""

    payload: NitroPayload
    claims: AttestedClaims


class NitroAuthenticator:
    """Authenticates Nitro documents against one pinned root.

    ``cache`` (optional) remembers verified chain prefixes across calls;
    validity periods are still checked against ``now_ms`` every time.
    """

    __slots__ = ("_anchor", "_cache")

    def __init__(self, anchor: TrustAnchor, *, cache: ChainCache | None = None) -> None:
        self._anchor = anchor
        self._cache = cache

    @property
    def kind(self) -> DocumentKind:
        return DocumentKind.NITRO

    @property
    def anchor(self) -> TrustAnchor:
        return self._anchor

    def authenticate(self, evidence: bytes, *, now_ms: int) -> AttestedClaims:
        return self.authenticate_document(evidence, now_ms=now_ms).claims

    def authenticate_document(self, document: bytes, *, now_ms: int) -> AuthenticatedNitroDocument:
        if not document or len(document) > MAX_EVIDENCE_BYTES:
            raise MalformedEvidence(
                Check.SIZE, f"document is {len(document)} bytes, 1 to {MAX_EVIDENCE_BYTES} allowed"
            )
        cose = parse_cose_sign1(document)
        fields = _payload_map(cose.payload)
        certificate, cabundle = _chain_fields(fields)
        signer = verify_chain(
            cabundle, certificate, anchor=self._anchor, now_ms=now_ms, cache=self._cache
        )
        try:
            signer.public_key.verify(
                raw_to_der_signature(cose.signature), cose.to_be_signed(), _ES384
            )
            verified = True
        except InvalidSignature:
            verified = False
        if not verified:
            raise BadSignature(
                Check.SIGNATURE, "document signature does not verify under the signing certificate"
            )
        payload = _remaining_fields(fields, certificate, cabundle)
        claims = AttestedClaims(
            kind=DocumentKind.NITRO,
            module_id=payload.module_id,
            timestamp_ms=payload.timestamp_ms,
            pcrs=payload.pcrs,
            public_key=payload.public_key,
            user_data=payload.user_data,
            nonce=payload.nonce,
            root_sha256=self._anchor.sha256,
            signer_sha256=signer.der_sha256,
        )
        return AuthenticatedNitroDocument(payload=payload, claims=claims)


def unverified_payload(document: bytes) -> dict[str, object]:
    """Decode a document's payload WITHOUT any authenticity check.

    For display and diagnostics only (e.g. showing what a rejected document
    claims); never base a decision on the result.
    """
    if not document or len(document) > MAX_EVIDENCE_BYTES:
        raise MalformedEvidence(Check.SIZE, "document size out of bounds")
    return _payload_map(parse_cose_sign1(document).payload)
