"""The three Noise state objects of spec §5: CipherState, SymmetricState, HandshakeState.

Sans-IO: every method takes bytes and returns bytes. Randomness for
ephemeral keys comes from the ``entropy`` callable (or a fixed key pair for
test vectors); nothing here reads the operating system's RNG, a clock or a
socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Final

from protocol.noise._errors import (
    NoiseConfigError,
    NoiseDecryptError,
    NoiseHandshakeError,
    NoiseMessageTooLarge,
    NoiseNonceExhausted,
    NoiseStateError,
)
from protocol.noise._patterns import DH_KEYS, INITIATOR, RESPONDER, Token
from protocol.noise._primitives import (
    KEY_LEN,
    MAX_NONCE,
    TAG_LEN,
    AEADAuthenticationFailure,
    Buffer,
    CipherFunction,
    Entropy,
    KeyPair,
    WritableBuffer,
)
from protocol.noise._protocol import NoiseProtocol

# §3: every Noise message, handshake or transport, is at most 65535 bytes.
MAX_MESSAGE_LEN: Final = 65535
# The largest transport plaintext: one message minus the AEAD tag.
MAX_TRANSPORT_PAYLOAD_LEN: Final = MAX_MESSAGE_LEN - TAG_LEN

_ZEROS_32: Final = bytes(32)


class CipherState:
    """A key and a 64-bit nonce counter (§5.1), used for transport messages.

    This is the hot path of every channel, so the AEAD object is built once per
    key and the nonce is packed by a precompiled ``struct``; each call does two
    comparisons, one pack and one AEAD call.
    """

    __slots__ = ("_aead", "_cipher", "_n", "_pack")

    def __init__(self, cipher: CipherFunction, key: bytes, *, nonce: int = 0) -> None:
        if len(key) != KEY_LEN:
            raise NoiseConfigError("cipher key must be 32 bytes")
        self._cipher = cipher
        self._aead = cipher.new_aead(bytes(key))
        self._pack = cipher.nonce
        self._n = 0
        self.set_nonce(nonce)

    def __repr__(self) -> str:
        return f"<CipherState {self._cipher.name} nonce={self._n}>"

    @property
    def nonce(self) -> int:
        """The nonce the next encrypt/decrypt will use."""
        return self._n

    def set_nonce(self, nonce: int) -> None:
        """SetNonce() of §5.1, for transports that deliver messages out of order.

        Setting a nonce that was already used for encryption reuses an AEAD
        nonce and destroys confidentiality; only receivers with their own
        replay protection should move it backwards. Tests also use it to reach
        the exhaustion boundary without 2**64 encryptions.
        """
        if not isinstance(nonce, int) or not 0 <= nonce <= MAX_NONCE:
            raise NoiseConfigError("nonce must be an integer in [0, 2**64-1]")
        self._n = nonce

    # Empty associated data is passed to the AEAD as None: ChaCha20-Poly1305
    # (RFC 8439 §2.8) and GCM authenticate zero AD bytes exactly as no AD, so
    # the output is identical (the test vectors check it), and ``cryptography``
    # then skips its AD step, measurably cheaper for small messages. Transport
    # messages always have empty AD, so every frame takes this path.

    def encrypt_with_ad(self, ad: Buffer, plaintext: Buffer) -> bytes:
        """EncryptWithAd() of §5.1: the ciphertext is ``len(plaintext) + 16`` bytes.

        ``ad`` and ``plaintext`` may be any bytes-like buffer (a memoryview of
        a larger buffer is read in place, not copied).
        """
        n = self._n
        if n >= MAX_NONCE:
            raise NoiseNonceExhausted("nonce exhausted; rekey cannot help, start a new session")
        if len(plaintext) > MAX_TRANSPORT_PAYLOAD_LEN:
            raise NoiseMessageTooLarge("plaintext exceeds 65519 bytes")
        ciphertext = self._aead.encrypt(self._pack(n), plaintext, ad or None)
        self._n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: Buffer, ciphertext: Buffer) -> bytes:
        """DecryptWithAd() of §5.1. On failure the nonce is left unchanged."""
        n = self._n
        if n >= MAX_NONCE:
            raise NoiseNonceExhausted("nonce exhausted; rekey cannot help, start a new session")
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise NoiseMessageTooLarge("ciphertext exceeds 65535 bytes")
        plaintext: bytes | None = None
        with contextlib.suppress(AEADAuthenticationFailure):
            plaintext = self._aead.decrypt(self._pack(n), ciphertext, ad or None)
        if plaintext is None:
            # Raised outside the handler: no __context__ rides along.
            raise NoiseDecryptError("authentication failed")
        self._n = n + 1
        return plaintext

    def encrypt_into(self, ad: Buffer, plaintext: Buffer, out: WritableBuffer) -> int:
        """EncryptWithAd() writing the ciphertext into ``out``; returns its length.

        ``out`` must be exactly ``len(plaintext) + 16`` bytes and must not
        overlap ``plaintext``. Lets a caller build a frame (header and
        ciphertext) in one buffer without a copy per message. Same checks, and
        the same nonce use, as :meth:`encrypt_with_ad`.
        """
        n = self._n
        if n >= MAX_NONCE:
            raise NoiseNonceExhausted("nonce exhausted; rekey cannot help, start a new session")
        size = len(plaintext)
        if size > MAX_TRANSPORT_PAYLOAD_LEN:
            raise NoiseMessageTooLarge("plaintext exceeds 65519 bytes")
        if len(out) != size + TAG_LEN:
            # Checked here so no nonce is consumed by a call that cannot succeed.
            raise NoiseConfigError("output buffer must be exactly len(plaintext) + 16 bytes")
        written = self._aead.encrypt_into(self._pack(n), plaintext, ad or None, out)
        self._n = n + 1
        return written

    def decrypt_into(self, ad: Buffer, ciphertext: Buffer, out: WritableBuffer) -> int:
        """DecryptWithAd() writing the plaintext into ``out``; returns its length.

        ``out`` must be exactly ``len(ciphertext) - 16`` bytes and must not
        overlap ``ciphertext``. On failure the nonce is left unchanged and
        ``out`` is zeroed: the AEAD writes plaintext before it has checked the
        tag, and unauthenticated plaintext must not be left for anyone to read.
        """
        n = self._n
        if n >= MAX_NONCE:
            raise NoiseNonceExhausted("nonce exhausted; rekey cannot help, start a new session")
        size = len(ciphertext)
        if size > MAX_MESSAGE_LEN:
            raise NoiseMessageTooLarge("ciphertext exceeds 65535 bytes")
        if size < TAG_LEN:
            raise NoiseDecryptError("authentication failed")
        if len(out) != size - TAG_LEN:
            raise NoiseConfigError("output buffer must be exactly len(ciphertext) - 16 bytes")
        written: int | None = None
        with contextlib.suppress(AEADAuthenticationFailure):
            written = self._aead.decrypt_into(self._pack(n), ciphertext, ad or None, out)
        if written is None:
            memoryview(out).cast("B")[:] = bytes(size - TAG_LEN)
            raise NoiseDecryptError("authentication failed")
        self._n = n + 1
        return written

    def rekey(self) -> None:
        """Rekey() of §5.1 / §11.3: k = first 32 bytes of ENCRYPT(k, 2**64-1, b"", zeros).

        The nonce is not reset, so rekeying never makes a nonce usable twice.
        """
        new_key = self._aead.encrypt(self._pack(MAX_NONCE), _ZEROS_32, b"")[:KEY_LEN]
        self._aead = self._cipher.new_aead(new_key)


class _UnusedDirection(CipherState):
    """The direction a one-way pattern never uses (§7.4): every operation refuses."""

    __slots__ = ()

    def __init__(self, cipher: CipherFunction) -> None:  # no key: nothing to build
        self._cipher = cipher
        self._n = 0

    def __repr__(self) -> str:
        return f"<CipherState {self._cipher.name} unused (one-way pattern)>"

    def encrypt_with_ad(self, ad: Buffer, plaintext: Buffer) -> bytes:
        raise NoiseStateError("one-way pattern: this side does not send transport messages")

    def decrypt_with_ad(self, ad: Buffer, ciphertext: Buffer) -> bytes:
        raise NoiseStateError("one-way pattern: this side does not receive transport messages")

    def encrypt_into(self, ad: Buffer, plaintext: Buffer, out: WritableBuffer) -> int:
        raise NoiseStateError("one-way pattern: this side does not send transport messages")

    def decrypt_into(self, ad: Buffer, ciphertext: Buffer, out: WritableBuffer) -> int:
        raise NoiseStateError("one-way pattern: this side does not receive transport messages")

    def rekey(self) -> None:
        raise NoiseStateError("one-way pattern: this direction is unused")


class SymmetricState:
    """Chaining key, handshake hash and the handshake's CipherState (§5.2)."""

    __slots__ = ("_cipher", "_cipher_function", "_ck", "_h", "_hash")

    def __init__(self, protocol: NoiseProtocol) -> None:
        self._hash = protocol.hash
        self._cipher_function = protocol.cipher
        name = protocol.name.encode("ascii")
        hashlen = self._hash.hashlen
        # InitializeSymmetric: pad a short name to HASHLEN, hash a long one.
        self._h = name.ljust(hashlen, b"\x00") if len(name) <= hashlen else self._hash.hash(name)
        self._ck = self._h
        self._cipher: CipherState | None = None

    @property
    def has_key(self) -> bool:
        return self._cipher is not None

    @property
    def handshake_hash(self) -> bytes:
        return self._h

    def mix_key(self, input_key_material: bytes) -> None:
        self._ck, temp_k = self._hash.hkdf(self._ck, input_key_material, 2)
        # §5.2: with a 64-byte hash, the cipher key is the first 32 bytes.
        self._cipher = CipherState(self._cipher_function, temp_k[:KEY_LEN])

    def mix_hash(self, data: bytes) -> None:
        self._h = self._hash.hash(self._h + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self._ck, temp_h, temp_k = self._hash.hkdf(self._ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self._cipher = CipherState(self._cipher_function, temp_k[:KEY_LEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = (
            plaintext if self._cipher is None else self._cipher.encrypt_with_ad(self._h, plaintext)
        )
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = (
            ciphertext
            if self._cipher is None
            else self._cipher.decrypt_with_ad(self._h, ciphertext)
        )
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = self._hash.hkdf(self._ck, b"", 2)
        c1 = CipherState(self._cipher_function, temp_k1[:KEY_LEN])
        c2 = CipherState(self._cipher_function, temp_k2[:KEY_LEN])
        # The chaining key could derive the transport keys again; drop it.
        self._ck = b""
        self._cipher = None
        return c1, c2


def _check_key_pair(protocol: NoiseProtocol, key_pair: KeyPair, what: str) -> None:
    if not isinstance(key_pair, KeyPair):
        raise NoiseConfigError(f"{what} must be a KeyPair")
    if len(key_pair.private) != protocol.dh.dhlen or len(key_pair.public) != protocol.dh.dhlen:
        raise NoiseConfigError(f"{what} has the wrong length for the DH function")
    if protocol.dh.public_from_private(key_pair.private) != key_pair.public:
        raise NoiseConfigError(f"{what}: public key does not match private key")


class HandshakeState:
    """One side of a Noise handshake (§5.3).

    Arguments beyond ``protocol`` are keyword-only:

    * ``initiator`` — which side this is.
    * ``prologue`` — bytes both sides must agree on (mixed into the hash).
    * ``static`` — this side's static key pair, exactly when the pattern uses it.
    * ``remote_static`` — the peer's static public key, exactly when the
      pattern has it as a pre-message (the "K" and "<- s" cases).
    * ``psks`` — one 32-byte key per psk modifier, in modifier order.
    * ``entropy`` — where ephemeral private keys come from (pass the Random
      seam's ``token_bytes``). Required when this side sends "e" unless
      ``ephemeral`` is given.
    * ``ephemeral`` — a fixed ephemeral key pair, for test vectors only: reusing
      an ephemeral across handshakes breaks the protocol's security.

    Keys the pattern does not use are refused rather than ignored, so a caller
    who believes a key authenticates something learns immediately that it
    does not.
    """

    def __init__(
        self,
        protocol: NoiseProtocol,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static: KeyPair | None = None,
        remote_static: bytes | None = None,
        psks: Sequence[bytes] = (),
        entropy: Entropy | None = None,
        ephemeral: KeyPair | None = None,
    ) -> None:
        if not isinstance(protocol, NoiseProtocol):
            raise NoiseConfigError("protocol must be a NoiseProtocol")
        if not isinstance(prologue, bytes | bytearray | memoryview):
            raise NoiseConfigError("prologue must be bytes")
        pattern = protocol.pattern
        party = INITIATOR if initiator else RESPONDER
        dhlen = protocol.dh.dhlen

        if pattern.uses_static(party):
            if static is None:
                raise NoiseConfigError("this pattern needs a local static key pair")
            _check_key_pair(protocol, static, "static key pair")
        elif static is not None:
            raise NoiseConfigError("this pattern does not use a local static key pair")

        if pattern.knows_remote_static_at_start(party):
            if remote_static is None:
                raise NoiseConfigError("this pattern needs the peer's static public key")
            if not isinstance(remote_static, bytes | bytearray) or len(remote_static) != dhlen:
                raise NoiseConfigError("remote static key has the wrong length")
            remote_static = bytes(remote_static)
        elif remote_static is not None:
            raise NoiseConfigError("this pattern learns the peer's static key; do not pass one")

        # A bare bytes value is a sequence too (of ints); refuse it rather than
        # misread one psk as many.
        if isinstance(psks, bytes | bytearray | str) or not all(
            isinstance(psk, bytes | bytearray) for psk in psks
        ):
            raise NoiseConfigError("psks must be a sequence of 32-byte keys")
        psk_list = [bytes(psk) for psk in psks]
        if len(psk_list) != pattern.psk_count:
            raise NoiseConfigError("number of psks does not match the pattern's psk modifiers")
        if any(len(psk) != KEY_LEN for psk in psk_list):
            raise NoiseConfigError("each psk must be 32 bytes")

        if pattern.sends_ephemeral(party):
            if ephemeral is not None:
                _check_key_pair(protocol, ephemeral, "ephemeral key pair")
            elif entropy is None:
                raise NoiseConfigError("an entropy source or an ephemeral key pair is required")
        elif ephemeral is not None:
            raise NoiseConfigError("this side sends no ephemeral key")

        self._protocol = protocol
        self._party = party
        self._s = static
        self._e: KeyPair | None = ephemeral
        self._rs = remote_static
        self._re: bytes | None = None
        self._psks = psk_list
        self._entropy = entropy
        # §9.2: in a psk handshake every "e" also does MixKey(e.public_key).
        self._psk_mode = pattern.psk_count > 0
        self._index = 0
        self._failed = False
        self._split_done = False

        self._symmetric = SymmetricState(protocol)
        self._symmetric.mix_hash(bytes(prologue))
        # §5.3 Initialize(): the initiator's pre-message keys are hashed first,
        # then the responder's. The pattern table admits only "s" there.
        for owner in (INITIATOR, RESPONDER):
            for token in pattern.premessage(owner):
                if token is not Token.S:
                    raise NoiseConfigError("only static keys may be pre-messages")
                key = self._local_static().public if owner == party else self._remote_static()
                self._symmetric.mix_hash(key)

    # -- public state ---------------------------------------------------------------------

    @property
    def protocol(self) -> NoiseProtocol:
        return self._protocol

    @property
    def is_initiator(self) -> bool:
        return self._party == INITIATOR

    @property
    def message_index(self) -> int:
        """How many handshake messages this side has written or read so far."""
        return self._index

    @property
    def is_complete(self) -> bool:
        return self._index >= len(self._protocol.pattern.messages)

    @property
    def is_our_turn(self) -> bool:
        """True if the next handshake message is this side's to write."""
        return not self.is_complete and self._protocol.pattern.sender(self._index) == self._party

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once given or learned; else None."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """GetHandshakeHash() (§5.2, §11.2): identifies the session, for channel binding."""
        if not self.is_complete:
            raise NoiseStateError("the handshake hash is final only after the handshake")
        return self._symmetric.handshake_hash

    # -- handshake ------------------------------------------------------------------------

    def write_message(self, payload: bytes = b"") -> bytes:
        """WriteMessage() of §5.3: the next handshake message, carrying ``payload``."""
        self._check_turn(writing=True)
        tokens = self._protocol.pattern.messages[self._index]
        if self._planned_length(tokens, len(payload)) > MAX_MESSAGE_LEN:
            # Checked before any state changes, so the caller may retry with less.
            raise NoiseMessageTooLarge("handshake message would exceed 65535 bytes")
        symmetric = self._symmetric
        parts: list[bytes] = []
        try:
            for token in tokens:
                if token is Token.E:
                    if self._e is None:
                        assert self._entropy is not None  # checked in __init__
                        self._e = KeyPair.generate(self._protocol.dh, self._entropy)
                    parts.append(self._e.public)
                    symmetric.mix_hash(self._e.public)
                    if self._psk_mode:
                        symmetric.mix_key(self._e.public)
                elif token is Token.S:
                    parts.append(symmetric.encrypt_and_hash(self._local_static().public))
                elif token is Token.PSK:
                    symmetric.mix_key_and_hash(self._psks.pop(0))
                else:
                    symmetric.mix_key(self._dh(token))
            parts.append(symmetric.encrypt_and_hash(bytes(payload)))
        except BaseException:
            self._failed = True
            raise
        self._index += 1
        self._after_last_message()
        return b"".join(parts)

    def read_message(self, message: bytes) -> bytes:
        """ReadMessage() of §5.3: consume a peer handshake message, return its payload.

        Raises NoiseDecryptError when authentication fails, NoiseHandshakeError
        when the message is malformed or a public key is invalid, and
        NoiseMessageTooLarge above 65535 bytes. After any failure the
        handshake is dead: further calls raise NoiseHandshakeError.
        """
        self._check_turn(writing=False)
        if not isinstance(message, bytes | bytearray | memoryview):
            raise NoiseHandshakeError("handshake message must be bytes")
        data = bytes(message)
        if len(data) > MAX_MESSAGE_LEN:
            raise NoiseMessageTooLarge("handshake message exceeds 65535 bytes")
        tokens = self._protocol.pattern.messages[self._index]
        symmetric = self._symmetric
        dhlen = self._protocol.dh.dhlen
        offset = 0
        try:
            for token in tokens:
                if token is Token.E:
                    if len(data) - offset < dhlen:
                        raise NoiseHandshakeError("handshake message too short")
                    self._re = data[offset : offset + dhlen]
                    offset += dhlen
                    symmetric.mix_hash(self._re)
                    if self._psk_mode:
                        symmetric.mix_key(self._re)
                elif token is Token.S:
                    length = dhlen + (TAG_LEN if symmetric.has_key else 0)
                    if len(data) - offset < length:
                        raise NoiseHandshakeError("handshake message too short")
                    self._rs = symmetric.decrypt_and_hash(data[offset : offset + length])
                    offset += length
                elif token is Token.PSK:
                    symmetric.mix_key_and_hash(self._psks.pop(0))
                else:
                    symmetric.mix_key(self._dh(token))
            payload = symmetric.decrypt_and_hash(data[offset:])
        except BaseException:
            self._failed = True
            raise
        self._index += 1
        self._after_last_message()
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """Split() of §5.2, oriented for this side: returns ``(send, recv)``.

        The initiator sends with c1 and receives with c2; the responder the
        reverse. In one-way patterns only c1 is used (§7.4), and the unused
        direction is a CipherState that refuses every operation. Callable once:
        a second pair would restart the nonces at zero under the same keys.
        """
        if not self.is_complete:
            raise NoiseStateError("split before the handshake is complete")
        if self._split_done:
            raise NoiseStateError("split may be called only once")
        self._split_done = True
        c1, c2 = self._symmetric.split()
        if self._protocol.pattern.one_way:
            unused = _UnusedDirection(self._protocol.cipher)
            return (c1, unused) if self._party == INITIATOR else (unused, c1)
        return (c1, c2) if self._party == INITIATOR else (c2, c1)

    # -- internals ------------------------------------------------------------------------

    def _check_turn(self, *, writing: bool) -> None:
        if self._failed:
            raise NoiseHandshakeError("the handshake already failed")
        if self.is_complete:
            raise NoiseStateError("the handshake is complete")
        if self.is_our_turn != writing:
            raise NoiseStateError(
                "not this side's turn to write" if writing else "this side must write next"
            )

    def _planned_length(self, tokens: Sequence[Token], payload_len: int) -> int:
        """The exact length write_message will produce, computed without side effects."""
        has_key = self._symmetric.has_key
        dhlen = self._protocol.dh.dhlen
        total = 0
        for token in tokens:
            if token is Token.E:
                total += dhlen
                has_key = has_key or self._psk_mode
            elif token is Token.S:
                total += dhlen + (TAG_LEN if has_key else 0)
            else:  # DH tokens and psk all end in MixKey.
                has_key = True
        return total + payload_len + (TAG_LEN if has_key else 0)

    def _local_static(self) -> KeyPair:
        if self._s is None:  # excluded by __init__; kept for the type checker
            raise NoiseStateError("no local static key")
        return self._s

    def _remote_static(self) -> bytes:
        if self._rs is None:
            raise NoiseHandshakeError("peer static key not known yet")
        return self._rs

    def _dh(self, token: Token) -> bytes:
        """DH for "ee", "es", "se", "ss" from this side's point of view (§5.3)."""
        initiator_key, responder_key = DH_KEYS[token]
        local, remote = (
            (initiator_key, responder_key)
            if self._party == INITIATOR
            else (responder_key, initiator_key)
        )
        if local is Token.E:
            if self._e is None:
                raise NoiseHandshakeError("local ephemeral key not generated yet")
            private = self._e.private
        else:
            private = self._local_static().private
        if remote is Token.E:
            if self._re is None:
                raise NoiseHandshakeError("peer ephemeral key not known yet")
            public = self._re
        else:
            public = self._remote_static()
        return self._protocol.dh.dh(private, public)

    def _after_last_message(self) -> None:
        if self.is_complete:
            # The ephemeral private key has done its job; do not keep it around.
            self._e = None
