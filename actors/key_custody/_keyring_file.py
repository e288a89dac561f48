"""The keyring on disk: bound to a TPM counter and authenticated by its KEKs.

Retiring a data key or completing a KEK rotation removes a key from the
keyring, and the keys node promises it is gone for good. The file, though,
sits on a disk that root controls: restoring yesterday's copy would bring the
retired data keys and the destroyed KEK's sealed blob back (the blob still
unseals, because sealing binds PCR values, not time). So the file carries

* ``version``: raised by one with every change the vault commits, and bound to
  the TPM NV counter :data:`KEYRING_COUNTER` (a second counter beside the
  release counter). The vault opens only a file whose version equals the
  counter -- or is one above it, see below -- so every older file is refused
  (:attr:`KeyringCheck.ROLLBACK`);
* ``binding``: which definition of that counter the keyring belongs to (its NV
  name, :class:`actors.counter_guard.CounterBinding`), so a counter the TPM
  owner deleted (:attr:`CounterCheck.MISSING`) or deleted and defined again
  (:attr:`CounterCheck.RECREATED`) is refused by the counter guard rather
  than trusted at whatever value it now holds;
* ``mac``: HMAC-SHA256 over everything else, under a key derived (HKDF-SHA256)
  from *every* KEK in the keyring. Only code that can unseal those KEKs --
  the measured keys node -- can write a file the vault accepts, so an edited
  version or binding fails (:attr:`KeyringCheck.UNAUTHENTIC`), and so does a
  file put together from a KEK the writer sealed itself next to copies of the
  genuine records: the writer would have to know the genuine KEK too. (The TPM
  owner *can* seal a KEK of its own choosing to this node's PCR values; what
  it cannot do is get the genuine ones out.)

Persist order (see :meth:`actors.key_custody.KeyVault._commit`): write the
file with version ``counter + 1``, durably; then advance the counter to it;
then use the new keyring. A crash between the two steps leaves a file one
above the counter, which is why opening accepts ``counter + 1`` too and
advances the counter before using it (a file that far ahead can only come
from this vault: it carries a valid MAC). A crash before the write leaves the
previous file, equal to the counter. Either way the newest committed state
opens and nothing older does; the only older file that stays acceptable is
the one the crash interrupted the replacement of, and only until the next
start advances the counter past it.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Final

import msgpack
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from actors.counter_guard import MAX_BINDING_BYTES, CounterBinding, CounterRefused
from actors.key_custody._errors import KeyringError
from actors.key_custody._keyring import KEK_SIZE, Keyring

#: The TPM NV counter the keyring's version is bound to (the release counter,
#: ``protocol.measurement.RELEASE_COUNTER``, is 0).
KEYRING_COUNTER: Final = 1
KEYRING_FILE_FORMAT: Final = 1
MAC_SIZE: Final = 32
_MAC_KEY_INFO: Final = b"mantle/keyring-mac-key/v1\x00"
_MAC_DOMAIN: Final = b"mantle/keyring-file/v1\x00"
_MAX_FILE_BYTES: Final = 17 << 20
_MAX_VERSION: Final = 1 << 32


class KeyringCheck(enum.StrEnum):
    """Why a keyring file was refused (counter problems are CounterRefused)."""

    #: Not a keyring file: wrong shape, sizes or types.
    MALFORMED = "malformed"
    #: The MAC does not verify under the file's KEKs: edited, or not written here.
    UNAUTHENTIC = "unauthentic"
    #: The file's version is below the keyring counter: an older copy.
    ROLLBACK = "rollback"
    #: The file's version is more than one write ahead of the counter.
    AHEAD_OF_COUNTER = "ahead_of_counter"


class KeyringRefused(KeyringError):
    """The keyring file must not be used; :attr:`check` names why."""

    def __init__(self, check: KeyringCheck, detail: str) -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"keyring refused [{check.value}]: {detail}")


@dataclass(frozen=True)
class KeyringFile:
    """A keyring with its version, counter binding and MAC, as stored."""

    version: int
    binding: CounterBinding
    keyring: Keyring
    mac: bytes

    @staticmethod
    def mac_key(keks: Sequence[bytes]) -> bytes:
        """The MAC key for a keyring whose KEKs (in KEK-id order) are ``keks``."""
        if not keks or any(len(kek) != KEK_SIZE for kek in keks):
            raise KeyringError("a keyring MAC key needs every KEK, 32 bytes each")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=MAC_SIZE, salt=None, info=_MAC_KEY_INFO)
        return hkdf.derive(b"".join(keks))

    @staticmethod
    def _authenticated_part(version: int, binding: CounterBinding, keyring: Keyring) -> bytes:
        packed: bytes = msgpack.packb(
            [KEYRING_FILE_FORMAT, version, binding.encode(), keyring.encode()], use_bin_type=True
        )
        return _MAC_DOMAIN + packed

    @classmethod
    def seal(
        cls, keyring: Keyring, *, version: int, binding: CounterBinding, mac_key: bytes
    ) -> KeyringFile:
        """``keyring`` as version ``version``, MACed under ``mac_key``."""
        part = cls._authenticated_part(version, binding, keyring)
        return cls(version, binding, keyring, hmac.new(mac_key, part, sha256).digest())

    def verify(self, mac_key: bytes) -> None:
        """:class:`KeyringRefused` (UNAUTHENTIC) unless the MAC verifies."""
        part = self._authenticated_part(self.version, self.binding, self.keyring)
        if not hmac.compare_digest(hmac.new(mac_key, part, sha256).digest(), self.mac):
            raise KeyringRefused(
                KeyringCheck.UNAUTHENTIC,
                "the keyring file does not authenticate under its KEKs: it was edited, or"
                " this keys node did not write it",
            )

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
        """Parse a stored file strictly. Not yet authenticated: see :meth:`verify`."""
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
