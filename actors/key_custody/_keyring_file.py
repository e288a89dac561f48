"""The keyring on disk: bound to a TPM counter, authenticated by the measured state.

The file's format and the bytes its MAC covers are
:class:`protocol.key_custody.KeyringFile`'s; this module seals and checks one
with the TPM seam.

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
  name, :class:`protocol.counter_binding.CounterBinding`), so a counter the TPM
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
import hmac
from typing import Final

from actors.seams.tpm import TPM, TPMError
from protocol.counter_binding import CounterBinding
from protocol.key_custody import Keyring, KeyringCheck, KeyringError, KeyringFile, KeyringRefused
from protocol.measurement import MEASURED_PCRS

#: The TPM NV counter the keyring's version is bound to (the release counter,
#: ``protocol.measurement.RELEASE_COUNTER``, is 0).
KEYRING_COUNTER: Final = 1
#: The registers whose current values key the keyring's MAC: the node image
#: and the release, model and config (see the module docstring).
KEYRING_MAC_PCRS: Final = MEASURED_PCRS


def seal_keyring_file(
    keyring: Keyring, *, version: int, binding: CounterBinding, tpm: TPM
) -> KeyringFile:
    """``keyring`` as version ``version``, MACed by ``tpm`` in its current state."""
    mac = _measured_mac(tpm, KeyringFile.authenticated_message(version, binding, keyring))
    return KeyringFile(version, binding, keyring, mac)


def verify_keyring_file(stored: KeyringFile, tpm: TPM) -> None:
    """:class:`KeyringRefused` (UNAUTHENTIC) unless ``tpm``, in the state it
    is in now, computes ``stored``'s MAC."""
    expected = _measured_mac(tpm, stored.mac_message)
    if not hmac.compare_digest(expected, stored.mac):
        raise KeyringRefused(
            KeyringCheck.UNAUTHENTIC,
            "the keyring file does not authenticate in this node's measured state: it"
            " was edited, or this keys node (this image and release, on this TPM) did"
            " not write it",
        )


def _measured_mac(tpm: TPM, message: bytes) -> bytes:
    mac: bytes | None = None
    with contextlib.suppress(TPMError):
        mac = tpm.measured_hmac(KEYRING_MAC_PCRS, message)
    if mac is None:
        raise KeyringError("the TPM did not compute the keyring MAC (its PCRs moved, or it failed)")
    return mac
