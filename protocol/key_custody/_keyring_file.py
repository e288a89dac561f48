"""The keyring file's format: ``[format, version, counter binding, keyring, MAC]``.

Why the file carries a version bound to a TPM counter, a counter binding and a
MAC computed by the TPM in the measured state -- and why nothing *in* the file
could key that MAC -- is explained where the file is sealed and checked,
:mod:`actors.key_custody` (the room holds the TPM). This module is the format
only, sans-IO: the strict codec and :meth:`KeyringFile.authenticated_message`,
the bytes the MAC is computed over. The MAC itself comes from the TPM seam.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from hashlib import sha256
from typing import Final

import msgpack

from protocol.counter_binding import MAX_BINDING_BYTES, CounterBinding, CounterRefused
from protocol.key_custody._errors import KeyringCheck, KeyringRefused
from protocol.key_custody._keyring import Keyring

#: 2: the MAC is the TPM's measured HMAC (1 keyed it from the KEKs in the file).
KEYRING_FILE_FORMAT: Final = 2
#: An HMAC-SHA256 tag (what the TPM seam's ``measured_hmac`` returns).
MAC_SIZE: Final = 32
_MAC_DOMAIN: Final = b"mantle/keyring-file/v2\x00"
_MAX_FILE_BYTES: Final = 17 << 20
_MAX_VERSION: Final = 1 << 32


@dataclass(frozen=True)
class KeyringFile:
    """A keyring with its version, counter binding and MAC, as stored."""

    version: int
    binding: CounterBinding
    keyring: Keyring
    mac: bytes

    @staticmethod
    def authenticated_message(version: int, binding: CounterBinding, keyring: Keyring) -> bytes:
        """What the MAC of a file with these contents is computed over."""
        packed: bytes = msgpack.packb(
            [KEYRING_FILE_FORMAT, version, binding.encode(), keyring.encode()], use_bin_type=True
        )
        # The TPM HMACs at most a kilobyte; a keyring is larger, its digest is not.
        return _MAC_DOMAIN + sha256(packed).digest()

    @property
    def mac_message(self) -> bytes:
        """:meth:`authenticated_message` of this file's contents."""
        return self.authenticated_message(self.version, self.binding, self.keyring)

    def encode(self) -> bytes:
        encoded: bytes = msgpack.packb(
            [
                KEYRING_FILE_FORMAT,
                self.version,
                self.binding.encode(),
                self.keyring.encode(),
                self.mac,
            ],
            use_bin_type=True,
        )
        return encoded

    @classmethod
    def decode(cls, data: bytes) -> KeyringFile:
        """Parse a stored file strictly. Not yet authenticated: the room checks
        the MAC (``actors.key_custody.verify_keyring_file``) before using it."""
        top: object = None
        if type(data) is bytes and len(data) <= _MAX_FILE_BYTES:
            try:
                top = msgpack.unpackb(
                    data, raw=False, strict_map_key=True, ext_hook=_refuse_ext, max_bin_len=16 << 20
                )
            except Exception:  # msgpack raises several unrelated types
                top = None
        if not isinstance(top, list) or len(top) != 5 or top[0] != KEYRING_FILE_FORMAT:
            raise KeyringRefused(KeyringCheck.MALFORMED, "not a keyring file of this format")
        _, version, binding, body, mac = top
        if type(version) is not int or not 0 <= version < _MAX_VERSION:
            raise KeyringRefused(KeyringCheck.MALFORMED, "keyring version out of range")
        if type(binding) is not bytes or len(binding) > MAX_BINDING_BYTES:
            raise KeyringRefused(KeyringCheck.MALFORMED, "keyring counter binding malformed")
        if type(body) is not bytes or type(mac) is not bytes or len(mac) != MAC_SIZE:
            raise KeyringRefused(KeyringCheck.MALFORMED, "keyring body or MAC malformed")
        decoded: CounterBinding | None = None
        with contextlib.suppress(CounterRefused):
            decoded = CounterBinding.decode(binding)
        if decoded is None:
            raise KeyringRefused(KeyringCheck.MALFORMED, "keyring counter binding malformed")
        return cls(version, decoded, Keyring.decode(body), mac)


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError("msgpack extension types are not allowed in a keyring file")
