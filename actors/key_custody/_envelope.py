"""Key envelopes: a secret encrypted to one attested Noise static key.

A data key leaves the keys node only inside a one-way Noise ``N`` message
(``<- s; ... -> e, es``) addressed to the static key the recipient bound into
its attestation document. Only the holder of that private key -- born in the
recipient's memory at boot and never written out -- can open it. Reusing the
project's Noise implementation keeps one audited handshake code path.

The prologue carries everything the envelope is about (purpose, request nonce,
model id, key version), so an envelope opened in any other context fails
authentication instead of yielding a key for the wrong request.
"""

from __future__ import annotations

from typing import Final

import msgpack

from actors.key_custody._errors import EnvelopeError
from protocol.noise import Entropy as Entropy
from protocol.noise import HandshakeState, KeyPair, NoiseError, NoiseProtocol

ENVELOPE_PROTOCOL: Final = NoiseProtocol.from_name("Noise_N_25519_ChaChaPoly_BLAKE2s")
_PROLOGUE_DOMAIN: Final = b"mantle/key-envelope/v1\x00"


def envelope_prologue(purpose: str, *context: bytes | str | int) -> bytes:
    """The prologue binding an envelope to its purpose and request context."""
    packed: bytes = msgpack.packb([purpose, *context], use_bin_type=True)
    return _PROLOGUE_DOMAIN + packed


def seal_envelope(
    recipient_static_public: bytes, prologue: bytes, secret: bytes, entropy: Entropy
) -> bytes:
    """``secret`` encrypted so that only ``recipient_static_public``'s owner can read it."""
    try:
        handshake = HandshakeState(
            ENVELOPE_PROTOCOL,
            initiator=True,
            prologue=prologue,
            remote_static=recipient_static_public,
            entropy=entropy,
        )
        return handshake.write_message(secret)
    except NoiseError as error:
        raise EnvelopeError(f"cannot seal to this key ({type(error).__name__})") from None


def open_envelope(recipient_static: KeyPair, prologue: bytes, envelope: bytes) -> bytes:
    """The secret in ``envelope``; :class:`EnvelopeError` if it is not for us or this context."""
    try:
        handshake = HandshakeState(
            ENVELOPE_PROTOCOL, initiator=False, prologue=prologue, static=recipient_static
        )
        return handshake.read_message(envelope)
    except NoiseError as error:
        raise EnvelopeError(f"envelope does not open ({type(error).__name__})") from None


def new_static_key(entropy: Entropy) -> KeyPair:
    """A fresh X25519 static key pair for this process (never persisted)."""
    return KeyPair.generate(ENVELOPE_PROTOCOL.dh, entropy)
