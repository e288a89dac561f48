"""COSE_Sign1 as NitroTPM and Nitro Enclaves use it (RFC 9052 subset).

The document is an *untagged* 4-element array
``[protected: bstr, unprotected: map, payload: bstr, signature: bstr]``.
The protected header must be exactly the CBOR map ``{1: -35}`` (alg ES384),
the unprotected header an empty map, and the signature the 96-byte raw
``r || s`` of ECDSA P-384 over the Sig_structure
``["Signature1", protected, b"", payload]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from protocol.attestation._cbor import decode_strict
from protocol.attestation._errors import Check, MalformedEvidence

COSE_ALG_ES384 = -35
#: The only protected header accepted, byte for byte: ``{1: -35}``.
PROTECTED_ES384 = b"\xa1\x01\x38\x22"
P384_SCALAR_BYTES = 48
RAW_SIGNATURE_BYTES = 2 * P384_SCALAR_BYTES


@dataclass(frozen=True, slots=True)
class CoseSign1:
    """The four parts of a COSE_Sign1 message (payload still undecoded)."""

    protected: bytes
    payload: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        return sig_structure(self.protected, self.payload)


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The bytes ES384 signs: ``["Signature1", protected, h'', payload]``."""
    return cbor2.dumps(["Signature1", protected, b"", payload])


def encode_cose_sign1(protected: bytes, payload: bytes, raw_signature: bytes) -> bytes:
    """An untagged COSE_Sign1 with an empty unprotected header."""
    return cbor2.dumps([protected, {}, payload, raw_signature])


def parse_cose_sign1(document: bytes) -> CoseSign1:
    """Check the COSE framing and return its parts; nothing is trusted yet."""
    outer = decode_strict(document, what="document")
    if not isinstance(outer, list) or len(outer) != 4:
        raise MalformedEvidence(
            Check.COSE_STRUCTURE, "document is not an untagged 4-element COSE_Sign1 array"
        )
    protected, unprotected, payload, signature = outer
    if type(protected) is not bytes:
        raise MalformedEvidence(Check.COSE_STRUCTURE, "protected header is not a byte string")
    if not isinstance(unprotected, dict):
        raise MalformedEvidence(Check.COSE_STRUCTURE, "unprotected header is not a map")
    if unprotected:
        # Nitro puts nothing there; an unsigned header could only mislead.
        raise MalformedEvidence(Check.COSE_STRUCTURE, "unprotected header is not empty")
    if type(payload) is not bytes:
        raise MalformedEvidence(Check.COSE_STRUCTURE, "payload is not a byte string")
    if type(signature) is not bytes:
        raise MalformedEvidence(Check.COSE_STRUCTURE, "signature is not a byte string")
    if protected != PROTECTED_ES384:
        raise MalformedEvidence(
            Check.COSE_ALGORITHM, "protected header is not exactly {1: -35} (ES384)"
        )
    if len(signature) != RAW_SIGNATURE_BYTES:
        raise MalformedEvidence(
            Check.COSE_STRUCTURE,
            f"signature is {len(signature)} bytes, ES384 needs {RAW_SIGNATURE_BYTES}",
        )
    return CoseSign1(protected=protected, payload=payload, signature=signature)


def raw_to_der_signature(raw: bytes) -> bytes:
    """COSE's fixed-width ``r || s`` to the DER form OpenSSL verifies."""
    r = int.from_bytes(raw[:P384_SCALAR_BYTES], "big")
    s = int.from_bytes(raw[P384_SCALAR_BYTES:], "big")
    return encode_dss_signature(r, s)


def der_to_raw_signature(der: bytes) -> bytes:
    """DER ECDSA signature to COSE's fixed-width ``r || s``."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(P384_SCALAR_BYTES, "big") + s.to_bytes(P384_SCALAR_BYTES, "big")
