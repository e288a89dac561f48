"""Encoding and signing documents exactly as EC2 NitroTPM does.

The payload is an indefinite-length CBOR map (as NitroTPM emits it) with the
fields in AWS's order; absent optional fields are CBOR null; the PCR map and
CA bundle are definite-length. The COSE_Sign1 is untagged, the protected
header is ``{1: -35}`` and the signature raw ``r || s`` (96 bytes), made with
deterministic ECDSA so a seed reproduces the bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from protocol.attestation import (
    PROTECTED_ES384,
    der_to_raw_signature,
    encode_cose_sign1,
    sig_structure,
)

_DETERMINISTIC_ES384 = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
_INDEFINITE_MAP = b"\xbf"
_BREAK = b"\xff"


def encode_payload(fields: Mapping[str, object], *, indefinite: bool = True) -> bytes:
    """CBOR map of ``fields`` in their given order (indefinite length by default).

    Values are encoded as given, so tests can build payloads that break the
    format on purpose.
    """
    if not indefinite:
        return cbor2.dumps(dict(fields))
    body = b"".join(cbor2.dumps(key) + cbor2.dumps(value) for key, value in fields.items())
    return _INDEFINITE_MAP + body + _BREAK


def sign_payload(
    payload: bytes, signing_key: ec.EllipticCurvePrivateKey, *, protected: bytes = PROTECTED_ES384
) -> bytes:
    """An untagged COSE_Sign1 over ``payload``."""
    der = signing_key.sign(sig_structure(protected, payload), _DETERMINISTIC_ES384)
    return encode_cose_sign1(protected, payload, der_to_raw_signature(der))


def nitrotpm_fields(
    *,
    module_id: str,
    timestamp_ms: int,
    pcrs: Mapping[int, bytes],
    certificate: bytes,
    cabundle: tuple[bytes, ...],
    public_key: bytes | None,
    user_data: bytes | None,
    nonce: bytes | None,
) -> dict[str, object]:
    """The payload fields in the order NitroTPM writes them."""
    return {
        "module_id": module_id,
        "digest": "SHA384",
        "timestamp": timestamp_ms,
        "nitrotpm_pcrs": dict(sorted(pcrs.items())),
        "certificate": certificate,
        "cabundle": list(cabundle),
        "public_key": public_key,
        "user_data": user_data,
        "nonce": nonce,
    }
