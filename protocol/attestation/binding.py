"""What a node's attestation document binds: its key, and the channel it proves itself on.

Key. A node's Noise static public key is not placed in the document verbatim
but as a domain-separated SHA-256 digest (:func:`noise_key_binding`, the
document's ``public_key``), so the 32 bytes in the document cannot be confused
with any other use of the same key material and the field has a fixed size
regardless of the key type.

Channel. A document proves freshness by its ``nonce``. On a secure channel
(``actors.channel``) the nonce is not chosen by either side but derived from
the channel's Noise handshake hash (:func:`channel_attestation_nonce`): both
ends hold the same hash, nobody can steer it, and it differs for every
session. A document is therefore produced *after* the session it proves
itself on began, and is worthless on any other session: a document captured
from an earlier session, or from another peer's session, carries the wrong
nonce. TPM 2.0 quotes, which carry no wall-clock time, get their freshness
this way. The derivation separates

* the role of the side that attests (the Noise initiator or responder), so a
  document one side sent can never stand for the other side's;
* the purpose: the attestation exchange right after the handshake (no
  challenge) and each later re-attestation (a 32-byte challenge the verifier
  drew), so a re-attestation answer cannot stand for another challenge's.
"""

from __future__ import annotations

import hashlib
from typing import Final

NOISE_KEY_BINDING_DOMAIN = b"mantle/noise-static/v1\x00"
TLS_KEY_BINDING_DOMAIN: Final = b"mantle/tls-spki/v1\x00"
#: Upper bound on a SubjectPublicKeyInfo a TLS key binding accepts (P-256 is 91 bytes).
MAX_SPKI_BYTES: Final = 1024
CHANNEL_ATTESTATION_DOMAIN: Final = b"mantle/channel-attestation/v1\x00"
#: The size of a re-attestation challenge (and of a derived nonce).
CHALLENGE_BYTES: Final = 32
_HANDSHAKE_HASH_BYTES: Final = frozenset({32, 64})  # BLAKE2s/SHA-256, BLAKE2b/SHA-512
_INITIATOR: Final = b"I"
_RESPONDER: Final = b"R"


def noise_key_binding(static_public: bytes) -> bytes:
    """``SHA-256(b"mantle/noise-static/v1\\x00" || static_public)``."""
    if len(static_public) != 32:
        # X25519 public keys are exactly 32 bytes; anything else is a caller bug.
        raise ValueError("a Noise static public key is 32 bytes")
    return hashlib.sha256(NOISE_KEY_BINDING_DOMAIN + static_public).digest()


def tls_key_binding(spki_der: bytes) -> bytes:
    """``SHA-256(b"mantle/tls-spki/v1\\x00" || spki_der)``: what an ingress node's
    document carries (in ``user_data``) for the TLS key its HTTPS endpoint
    presents.

    ``spki_der`` is the certificate's DER SubjectPublicKeyInfo, so a client
    checks the binding from the certificate it was shown, whatever else the
    (self-signed, short-lived) certificate says. The domain differs from the
    Noise key binding's: a document binding one kind of key can never be read
    as binding the other.
    """
    if not 0 < len(spki_der) <= MAX_SPKI_BYTES or spki_der[0] != 0x30:
        # A DER SubjectPublicKeyInfo is a SEQUENCE; anything else is a caller bug.
        raise ValueError("a TLS key binding takes a DER SubjectPublicKeyInfo")
    return hashlib.sha256(TLS_KEY_BINDING_DOMAIN + spki_der).digest()


def channel_attestation_nonce(
    handshake_hash: bytes, *, attester_is_initiator: bool, challenge: bytes | None = None
) -> bytes:
    """The nonce the attesting side of a channel puts into its document.

    ``SHA-256(domain || role || len(h) || h || purpose)``, where ``role`` is
    ``I`` when the Noise initiator attests and ``R`` when the responder does,
    ``h`` is the handshake hash, and ``purpose`` is one zero byte for the
    exchange after the handshake or ``0x01 || challenge`` for a re-attestation.
    """
    if len(handshake_hash) not in _HANDSHAKE_HASH_BYTES:
        raise ValueError("a Noise handshake hash is 32 or 64 bytes")
    if challenge is None:
        purpose = b"\x00"
    elif len(challenge) == CHALLENGE_BYTES:
        purpose = b"\x01" + challenge
    else:
        raise ValueError(f"a re-attestation challenge is {CHALLENGE_BYTES} bytes")
    role = _INITIATOR if attester_is_initiator else _RESPONDER
    return hashlib.sha256(
        CHANNEL_ATTESTATION_DOMAIN
        + role
        + len(handshake_hash).to_bytes(1, "big")
        + handshake_hash
        + purpose
    ).digest()
