"""The Noise Protocol Framework, revision 34, sans-IO.

Bytes in, bytes out: no sockets, clocks or global randomness. Ephemeral keys
come from an ``entropy`` callable the caller injects (the Random seam's
``token_bytes``), so simulated runs are deterministic.

Supported: every pattern of spec §7 (N, K, X, NN ... IX) and §18 (the
deferred patterns NK1 ... I1X1), psk0..pskN modifiers (several joined by "+"),
DH 25519 and 448, ciphers ChaChaPoly and AESGCM, hashes SHA256, SHA512, BLAKE2s
and BLAKE2b.

    proto = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s")
    static = KeyPair.generate(proto.dh, random.token_bytes)
    hs = HandshakeState(proto, initiator=True, prologue=b"mantle/1",
                        static=static, entropy=random.token_bytes)
    wire = hs.write_message(b"")
    ...
    send, recv = hs.split()

Every error is a :class:`NoiseError` subclass naming the failed check.
"""

from protocol.noise._errors import (
    NoiseConfigError,
    NoiseDecryptError,
    NoiseError,
    NoiseHandshakeError,
    NoiseInvalidPublicKey,
    NoiseMessageTooLarge,
    NoiseNonceExhausted,
    NoiseProtocolNameError,
    NoiseStateError,
)
from protocol.noise._patterns import HandshakePattern, PatternValidityError, Token
from protocol.noise._primitives import (
    CipherFunction,
    DHFunction,
    Entropy,
    HashFunction,
    KeyPair,
)
from protocol.noise._protocol import NoiseProtocol
from protocol.noise._state import (
    MAX_MESSAGE_LEN,
    MAX_TRANSPORT_PAYLOAD_LEN,
    CipherState,
    HandshakeState,
    SymmetricState,
)

__all__ = [
    "MAX_MESSAGE_LEN",
    "MAX_TRANSPORT_PAYLOAD_LEN",
    "CipherFunction",
    "CipherState",
    "DHFunction",
    "Entropy",
    "HandshakePattern",
    "HandshakeState",
    "HashFunction",
    "KeyPair",
    "NoiseConfigError",
    "NoiseDecryptError",
    "NoiseError",
    "NoiseHandshakeError",
    "NoiseInvalidPublicKey",
    "NoiseMessageTooLarge",
    "NoiseNonceExhausted",
    "NoiseProtocol",
    "NoiseProtocolNameError",
    "NoiseStateError",
    "PatternValidityError",
    "SymmetricState",
    "Token",
]
