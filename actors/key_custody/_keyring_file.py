"""The keyring on disk: bound to a TPM counter, authenticated by the measured state.

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
* ``mac``: the TPM's measured HMAC (:meth:`actors.seams.tpm.TPM.measured_hmac`)
  over the PCRs :data:`KEYRING_MAC_PCRS` -- the node image's platform registers
  and the application registers -- of a SHA-256 digest of everything else.

Why the MAC key must come from the measured state, not from the KEKs
--------------------------------------------------------------------
The file has to prove "written by the measured keys node on this TPM", and
nothing *in* the file can prove that. An earlier format keyed the MAC from the
KEKs the file lists, reasoning that only the measured node can unseal them.
But sealing keeps a secret from other states; it does not say who sealed. The
TPM owner can create a sealed object under any PCR policy without being in
that state (``TPM2_Create`` checks no PCR; the PolicyPCR digest is computed in
a trial session from values any attestation document shows), holding a KEK of
the owner's choosing. A keyring listing only that KEK, with the genuine
version and counter binding copied over (both public), then authenticated
under a key the owner knows: the node opened it, and wrapped every data key it
was later given (a provider's re-import, a new model) under the owner's KEK,
on a disk the owner reads.

The measured HMAC's key is one the owner can neither choose nor use: a TPM
primary key derived from the storage hierarchy's seed and a fixed template
whose ``authPolicy`` is PolicyPCR over the selected registers' *current*
values. The owner can derive the very same primary from any state, but the TPM
uses it only in a policy session that satisfied that PolicyPCR, i.e. while the
machine is in the measured state, where only the released keys node's code
runs. A file whose MAC verifies was therefore written by that code, on this
TPM, in this state -- and that code only writes keyrings of KEKs it sealed
itself. The registers are the platform ones (another image) and the
application ones (another release, model or config); the owner can extend the
application registers to their published values on its own image, but not
make the platform registers show the released image.

Known limitation: a new release changes PCR 8 (the release digest), so the
keyring -- like the KEKs, which are sealed to the same registers -- does not
open on the next release. Handing the KEKs over to a new release (the old
release's node sealing them to the new release's expected registers, and
proving the handover with a key only its own state can use) is future work;
until then a release upgrade of a keys node is a re-import of the data keys
by their providers.

Persist order (see :meth:`actors.key_custody.KeyVault._commit`): write the
file with version ``counter + 1``, durably; then advance the counter to it;
then use the new keyring. A crash between the two steps leaves a file one
above the counter, which is why opening accepts ``counter + 1`` too and
advances the counter before using it (a file that far ahead can only come
from this vault: it carries a valid MAC). A crash before the write leaves the
previous file, equal to the counter. Either way the newest committed state
opens and nothing older does. How the vault keeps two different changes from
ever being written under one version (which would let the owner keep one and
restore it later) is described at :meth:`actors.key_custody.KeyVault._commit`.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
from dataclasses import dataclass
from hashlib import sha256
from typing import Final

import msgpack

from actors.counter_guard import MAX_BINDING_BYTES, CounterBinding, CounterRefused
from actors.key_custody._errors import KeyringError
from actors.key_custody._keyring import Keyring
from actors.seams.tpm import MEASURED_HMAC_SIZE, TPM, TPMError
from protocol.measurement import MEASURED_PCRS

#: The TPM NV counter the keyring's version is bound to (the release counter,
#: ``protocol.measurement.RELEASE_COUNTER``, is 0).
KEYRING_COUNTER: Final = 1
#: 2: the MAC is the TPM's measured HMAC (1 keyed it from the KEKs in the file).
KEYRING_FILE_FORMAT: Final = 2
#: The registers whose current values key the keyring's MAC: the node image
#: and the release, model and config (see the module docstring).
KEYRING_MAC_PCRS: Final = MEASURED_PCRS
MAC_SIZE: Final = MEASURED_HMAC_SIZE
_MAC_DOMAIN: Final = b"mantle/keyring-file/v2\x00"
_MAX_FILE_BYTES: Final = 17 << 20
_MAX_VERSION: Final = 1 << 32


class KeyringCheck(enum.StrEnum):
    """Why a keyring file was refused (counter problems are CounterRefused)."""

    #: Not a keyring file: wrong shape, sizes or types.
    MALFORMED = "malformed"
    #: The MAC does not verify in this TPM's measured state: edited, written by
    #: someone else, or in another state (another image, release or TPM).
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
    def _authenticated_digest(version: int, binding: CounterBinding, keyring: Keyring) -> bytes:
        packed: bytes = msgpack.packb(
            [KEYRING_FILE_FORMAT, version, binding.encode(), keyring.encode()], use_bin_type=True
        )
        # The TPM HMACs at most a kilobyte; a keyring is larger, its digest is not.
        return _MAC_DOMAIN + sha256(packed).digest()

    @classmethod
    def seal(
        cls, keyring: Keyring, *, version: int, binding: CounterBinding, tpm: TPM
    ) -> KeyringFile:
        """``keyring`` as version ``version``, MACed by ``tpm`` in its current state."""
        mac = _measured_mac(tpm, cls._authenticated_digest(version, binding, keyring))
        return cls(version, binding, keyring, mac)

    def verify(self, tpm: TPM) -> None:
        """:class:`KeyringRefused` (UNAUTHENTIC) unless ``tpm``, in the state it
        is in now, computes this file's MAC."""
        expected = _measured_mac(
            tpm, self._authenticated_digest(self.version, self.binding, self.keyring)
        )
        if not hmac.compare_digest(expected, self.mac):
            raise KeyringRefused(
                KeyringCheck.UNAUTHENTIC,
                "the keyring file does not authenticate in this node's measured state: it"
                " was edited, or this keys node (this image and release, on this TPM) did"
                " not write it",
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


def _measured_mac(tpm: TPM, message: bytes) -> bytes:
    mac: bytes | None = None
    with contextlib.suppress(TPMError):
        mac = tpm.measured_hmac(KEYRING_MAC_PCRS, message)
    if mac is None:
        raise KeyringError("the TPM did not compute the keyring MAC (its PCRs moved, or it failed)")
    return mac


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError("msgpack extension types are not allowed in a keyring file")
