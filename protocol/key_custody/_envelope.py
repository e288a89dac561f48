"""Key envelopes: a secret sent from one known Noise static key to another.

Every secret that crosses a node boundary in key custody -- a model provider's
data key import to the keys node, the keys node's data key grant to an
inference node -- travels in a one-way Noise ``K`` message
(``-> s; <- s; ... -> e, es, ss``). Both static keys are known to both sides
before the message: the recipient's is the one its attestation document binds
(for an import, the keys node's; for a grant, the requesting node's), the
sender's is pinned by the recipient (the model provider's key named in the
verified release; the keys node's key bound by its verified document). So:

* only the holder of the recipient's private key -- born in the recipient's
  memory at boot and never written out -- can open the envelope (``es``), and
* it opens only if it was sealed with the expected sender's private key
  (``ss``); an envelope from any other key, including an anonymous ``N``
  envelope, fails authentication. The ``N`` pattern used before authenticated
  nobody: anyone who knew the recipient's public key could send it a data key.

A one-way pattern has no forward secrecy against the recipient's static key
and no replay protection of its own; the keys are in-memory only (first), and
each use binds a single-use context into the prologue or refuses repeats
(second). It also cannot resist key-compromise impersonation: whoever holds the
recipient's private key can forge envelopes *to it*, which gives them nothing
they did not already have.

The prologue carries everything the envelope is about (purpose, request nonce,
model id, key version), so an envelope opened in any other context fails
authentication instead of yielding a key for the wrong request. Reusing the
project's Noise implementation keeps one audited handshake code path.

Sans-IO: the caller brings the keys and, to seal, the entropy (the Random
seam's ``token_bytes``); nothing here draws randomness or touches a device.
"""

from __future__ import annotations

from typing import Final

import msgpack

from protocol.key_custody._errors import Denial, EnvelopeError
from protocol.noise import Entropy as Entropy
from protocol.noise import HandshakeState, KeyPair, NoiseError, NoiseProtocol

ENVELOPE_PROTOCOL: Final = NoiseProtocol.from_name("Noise_K_25519_ChaChaPoly_BLAKE2s")
_PROLOGUE_DOMAIN: Final = b"mantle/key-envelope/v2\x00"
GRANT_PURPOSE: Final = "data-key-grant"
IMPORT_PURPOSE: Final = "data-key-import"


def envelope_prologue(purpose: str, *context: bytes | str | int) -> bytes:
    """The prologue binding an envelope to its purpose and request context."""
    packed: bytes = msgpack.packb([purpose, *context], use_bin_type=True)
    return _PROLOGUE_DOMAIN + packed


def grant_prologue(nonce: bytes, model_id: str, key_version: int) -> bytes:
    """A grant's context: the requester's challenge, the model and the key version."""
    return envelope_prologue(GRANT_PURPOSE, nonce, model_id, key_version)


def import_prologue(model_id: str, key_version: int, recipient_binding: bytes) -> bytes:
    """An import's context: the model, the key version and the keys node's key binding."""
    return envelope_prologue(IMPORT_PURPOSE, model_id, key_version, recipient_binding)


def seal_envelope(
    sender_static: KeyPair,
    recipient_static_public: bytes,
    prologue: bytes,
    secret: bytes,
    entropy: Entropy,
) -> bytes:
    """``secret`` from ``sender_static`` to ``recipient_static_public``'s owner only."""
    failed = False
    try:
        handshake = HandshakeState(
            ENVELOPE_PROTOCOL,
            initiator=True,
            prologue=prologue,
            static=sender_static,
            remote_static=recipient_static_public,
            entropy=entropy,
        )
        envelope = handshake.write_message(secret)
    except NoiseError:
        failed = True
    # Raised outside the handler: the Noise error's context holds the inputs.
    if failed:
        raise EnvelopeError(Denial.MALFORMED, "cannot seal an envelope with these keys")
    return envelope


def open_envelope(
    recipient_static: KeyPair, sender_static_public: bytes, prologue: bytes, envelope: bytes
) -> bytes:
    """The secret in ``envelope``, if ``sender_static_public``'s owner sealed it to
    ``recipient_static`` in this context; else :class:`EnvelopeError`."""
    opened: bytes | None = None
    try:
        handshake = HandshakeState(
            ENVELOPE_PROTOCOL,
            initiator=False,
            prologue=prologue,
            static=recipient_static,
            remote_static=sender_static_public,
        )
        opened = handshake.read_message(envelope)
    except NoiseError:
        pass
    if opened is None:
        raise EnvelopeError(
            Denial.UNAUTHENTICATED_SENDER,
            "the envelope does not open as sealed by the expected sender to this key",
        )
    return opened


def new_static_key(entropy: Entropy) -> KeyPair:
    """A fresh X25519 static key pair for this process (never persisted)."""
    return KeyPair.generate(ENVELOPE_PROTOCOL.dh, entropy)
