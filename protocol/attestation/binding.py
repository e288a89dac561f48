"""The key binding a node puts into its attestation document's ``public_key``.

A node's Noise static public key is not placed in the document verbatim but
as a domain-separated SHA-256 digest, so the 32 bytes in the document cannot
be confused with any other use of the same key material and the field has a
fixed size regardless of the key type.
"""

from __future__ import annotations

import hashlib

NOISE_KEY_BINDING_DOMAIN = b"mantle/noise-static/v1\x00"


def noise_key_binding(static_public: bytes) -> bytes:
    """``SHA-256(b"mantle/noise-static/v1\\x00" || static_public)``."""
    if len(static_public) != 32:
        # X25519 public keys are exactly 32 bytes; anything else is a caller bug.
        raise ValueError("a Noise static public key is 32 bytes")
    return hashlib.sha256(NOISE_KEY_BINDING_DOMAIN + static_public).digest()
