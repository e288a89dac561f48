"""The Noise error hierarchy.

Every failure the package can raise is a :class:`NoiseError`, so a caller that
handles untrusted bytes needs exactly one ``except`` clause. The subclasses name
the check that failed. Messages are fixed strings: they never carry key
material, payloads or ciphertext.
"""

from __future__ import annotations


class NoiseError(Exception):
    """Base class of every error raised by :mod:`protocol.noise`."""


class NoiseProtocolNameError(NoiseError, ValueError):
    """A protocol name is malformed or names something this package does not support."""


class NoiseConfigError(NoiseError, ValueError):
    """The local configuration does not fit the protocol (missing key, wrong length, psks)."""


class NoiseStateError(NoiseError):
    """An operation was called at the wrong time (not our turn, already complete, ...)."""


class NoiseHandshakeError(NoiseError):
    """A handshake message was malformed or the handshake cannot continue."""


class NoiseInvalidPublicKey(NoiseHandshakeError):
    """A Diffie-Hellman with a peer's public key failed (low-order point, all-zero output)."""


class NoiseDecryptError(NoiseError):
    """AEAD authentication failed: the ciphertext, associated data or key is wrong."""


class NoiseNonceExhausted(NoiseError):
    """The nonce reached 2**64-1, which the spec reserves; the CipherState is spent."""


class NoiseMessageTooLarge(NoiseError):
    """A Noise message would exceed, or does exceed, 65535 bytes."""
