"""The crypto functions a Noise protocol name selects (spec §4, §12).

Diffie-Hellman and AEAD come from ``cryptography``; hashes and HMAC from the
standard library's ``hashlib``/``hmac`` (which carry BLAKE2 natively). Each
family is a small frozen value object; the tables at the bottom map the names
that may appear in a protocol name to those objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x448 import X448PrivateKey, X448PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.noise._errors import NoiseConfigError, NoiseInvalidPublicKey

Entropy = Callable[[int], bytes]
"""A source of ``n`` uniformly random bytes, e.g. the Random seam's ``token_bytes``."""

KEY_LEN: Final = 32
TAG_LEN: Final = 16
# §5.1: the nonce 2**64-1 is reserved (REKEY uses it); ENCRYPT/DECRYPT must never reach it.
MAX_NONCE: Final = 2**64 - 1


# --- Diffie-Hellman (§4.1, §12.1, §12.2) --------------------------------------------------


def _x25519_public(private: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _x25519_exchange(private: bytes, public: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private)
    return key.exchange(X25519PublicKey.from_public_bytes(public))


def _x448_public(private: bytes) -> bytes:
    key = X448PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _x448_exchange(private: bytes, public: bytes) -> bytes:
    key = X448PrivateKey.from_private_bytes(private)
    return key.exchange(X448PublicKey.from_public_bytes(public))


@dataclass(frozen=True, slots=True)
class DHFunction:
    """One of the spec's DH functions: ``25519`` or ``448``."""

    name: str
    dhlen: int
    _public: Callable[[bytes], bytes] = field(repr=False)
    _exchange: Callable[[bytes, bytes], bytes] = field(repr=False)

    def public_from_private(self, private: bytes) -> bytes:
        if len(private) != self.dhlen:
            raise NoiseConfigError("private key has the wrong length for this DH function")
        return self._public(private)

    def dh(self, private: bytes, public: bytes) -> bytes:
        """DH(key_pair, public_key) of §4.1.

        §12.1/§12.2 allow rejecting invalid public keys; we do, because a
        low-order point makes the output all zeros and so independent of the
        private key. OpenSSL refuses such outputs itself; the explicit check
        keeps the guarantee if that ever changes.
        """
        if len(public) != self.dhlen:
            raise NoiseInvalidPublicKey("public key has the wrong length")
        shared: bytes | None = None
        with contextlib.suppress(ValueError):
            shared = self._exchange(private, public)
        if shared is None:
            # Raised outside the handler: no __context__ rides along.
            raise NoiseInvalidPublicKey("Diffie-Hellman with the peer's public key failed")
        if hmac.compare_digest(shared, bytes(self.dhlen)):
            raise NoiseInvalidPublicKey("Diffie-Hellman output is all zeros")
        return shared


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A DH key pair. ``private`` is kept out of ``repr`` so it never reaches a log."""

    public: bytes
    private: bytes = field(repr=False)

    @classmethod
    def from_private(cls, dh: DHFunction, private: bytes) -> KeyPair:
        return cls(public=dh.public_from_private(bytes(private)), private=bytes(private))

    @classmethod
    def generate(cls, dh: DHFunction, entropy: Entropy) -> KeyPair:
        """GENERATE_KEYPAIR() of §4.1, drawing the private key from ``entropy``.

        Any ``dhlen`` bytes are a valid private key for X25519 and X448 (the
        functions clamp), so the draw is used as is.
        """
        private = entropy(dh.dhlen)
        if not isinstance(private, bytes) or len(private) != dh.dhlen:
            raise NoiseConfigError("entropy source returned the wrong number of bytes")
        return cls.from_private(dh, private)


DH_25519: Final = DHFunction("25519", 32, _x25519_public, _x25519_exchange)
DH_448: Final = DHFunction("448", 56, _x448_public, _x448_exchange)


# --- Cipher functions (§4.2, §12.3, §12.4) ------------------------------------------------


Buffer: TypeAlias = bytes | bytearray | memoryview
"""Any contiguous bytes-like input the AEAD reads without copying."""

WritableBuffer: TypeAlias = bytearray | memoryview
"""A buffer the AEAD writes its output into (a memoryview must be writable)."""


class AEAD(Protocol):
    """The shape shared by ``cryptography``'s ChaCha20Poly1305 and AESGCM.

    The ``*_into`` forms write into a caller's buffer of exactly the output
    length instead of allocating a new ``bytes``.
    """

    def encrypt(self, nonce: bytes, data: Buffer, associated_data: Buffer | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: Buffer, associated_data: Buffer | None) -> bytes: ...

    def encrypt_into(
        self, nonce: bytes, data: Buffer, associated_data: Buffer | None, buf: WritableBuffer
    ) -> int: ...

    def decrypt_into(
        self, nonce: bytes, data: Buffer, associated_data: Buffer | None, buf: WritableBuffer
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class CipherFunction:
    """One of the spec's cipher functions: ``ChaChaPoly`` or ``AESGCM``.

    ``nonce`` packs the 64-bit counter into the 96-bit AEAD nonce. Both ciphers
    put 32 zero bits first; ChaChaPoly then encodes the counter little-endian
    (§12.3), AESGCM big-endian (§12.4). A precompiled ``struct`` does this in a
    single C call, which matters on the transport hot path.
    """

    name: str
    new_aead: Callable[[bytes], AEAD] = field(repr=False)
    nonce: Callable[[int], bytes] = field(repr=False)


CIPHER_CHACHAPOLY: Final = CipherFunction(
    "ChaChaPoly", ChaCha20Poly1305, struct.Struct("<4xQ").pack
)
CIPHER_AESGCM: Final = CipherFunction("AESGCM", AESGCM, struct.Struct(">4xQ").pack)

# Raised by ``cryptography`` when a tag does not verify; re-exported for _state.
AEADAuthenticationFailure: Final = InvalidTag


# --- Hash functions (§4.3, §12.5-§12.8) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class HashFunction:
    """One of the spec's hash functions, with HMAC and HKDF built on it (§4.3).

    ``hashlib_name`` selects the implementation; ``hashlib``'s HMAC uses the
    hash's own block size (64 for SHA256 and BLAKE2s, 128 for SHA512 and
    BLAKE2b), which is the BLOCKLEN §4.3 requires. BLAKE2s/BLAKE2b here are the
    unkeyed 32/64-byte variants the spec names.
    """

    name: str
    hashlen: int
    blocklen: int
    hashlib_name: str

    def hash(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()

    def hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, self.hashlib_name)

    def hkdf(self, chaining_key: bytes, input_key_material: bytes, outputs: int) -> list[bytes]:
        """HKDF(chaining_key, input_key_material, num_outputs) of §4.3 (2 or 3 outputs)."""
        temp_key = self.hmac(chaining_key, input_key_material)
        result: list[bytes] = []
        previous = b""
        for counter in range(1, outputs + 1):
            previous = self.hmac(temp_key, previous + bytes((counter,)))
            result.append(previous)
        return result


HASH_SHA256: Final = HashFunction("SHA256", 32, 64, "sha256")
HASH_SHA512: Final = HashFunction("SHA512", 64, 128, "sha512")
HASH_BLAKE2S: Final = HashFunction("BLAKE2s", 32, 64, "blake2s")
HASH_BLAKE2B: Final = HashFunction("BLAKE2b", 64, 128, "blake2b")


DH_FUNCTIONS: Final[Mapping[str, DHFunction]] = MappingProxyType(
    {f.name: f for f in (DH_25519, DH_448)}
)
CIPHER_FUNCTIONS: Final[Mapping[str, CipherFunction]] = MappingProxyType(
    {f.name: f for f in (CIPHER_CHACHAPOLY, CIPHER_AESGCM)}
)
HASH_FUNCTIONS: Final[Mapping[str, HashFunction]] = MappingProxyType(
    {f.name: f for f in (HASH_SHA256, HASH_SHA512, HASH_BLAKE2S, HASH_BLAKE2B)}
)
