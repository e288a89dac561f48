"""The TPM seam: everything a node asks of its trusted platform module.

Backends: ``simulations.nitrotpm.SimulatedNitroTPM`` (deterministic from a
seed) and the tpm2-pytss backend in ``nodes/tpm`` (a TPM 2.0 device, swtpm in
tests, NitroTPM on EC2). Calls are synchronous because real TPM commands are
blocking device I/O; async callers run them in a worker thread.

PCR values are SHA-384 (48 bytes); extending computes
``new = SHA384(old || digest)`` where ``digest`` is 48 bytes.

Monotonic counters are TPM 2.0 ``TPM_NT_COUNTER`` NV indices (or their
simulation). What the TPM guarantees, and what it does not:

* a counter never decreases while it exists, across reboots;
* a counter defined afresh starts, on its initialising increment, one above
  the highest count any counter deleted from this TPM held
  (``TPM2_NV_Increment`` on an unwritten counter first loads the TPM's counter
  high-water mark, which deleting a counter raises; seen on swtpm/libtpms, and
  a counter defined while another stands does not inherit that one's count),
  so deleting and re-creating a counter never lowers the value found at its
  handle;
* the TPM owner can delete (undefine) any counter the owner hierarchy defined,
  and can define a new one at the same handle. Only platform authority can make
  an index undeletable, and EC2 user space does not hold it.

So the seam never lets a deleted counter pass for zero: reading, naming or
incrementing an undefined counter raises :class:`CounterMissing`, and only
:meth:`TPM.counter_define` creates one. Each definition gets a distinct NV
name (the hash of its public area, which includes a random authorisation
policy), so a caller that remembers the name notices a counter re-created by
anyone who did not copy the public area. ``actors.counter_guard`` is the one
place that checks counters against remembered names.

Sealing keeps data secret from other PCR states, but it does not say who
sealed: the TPM owner can create a sealed object under any PCR policy
(``TPM2_Create`` checks no PCR state), holding data of the owner's choosing.
What only code running in a given state can do is *use* a key bound to that
state. :meth:`TPM.measured_hmac` is that operation: an HMAC under a key that
this TPM derives from its storage seed and the current values of the chosen
PCRs, and that it uses only while they hold those values. Anyone can ask for
the key of another state, nobody can use it there; so a tag that verifies
under :meth:`TPM.measured_hmac` was computed on this TPM in this state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

#: Longest message :meth:`TPM.measured_hmac` takes: TPM 2.0's ``MAX_DIGEST_BUFFER``
#: (callers authenticate a digest of what they protect, not the thing itself).
MAX_MEASURED_HMAC_MESSAGE: Final = 1024
#: :meth:`TPM.measured_hmac` is HMAC-SHA256.
MEASURED_HMAC_SIZE: Final = 32


class TPMError(Exception):
    """A TPM command failed (device error, injected fault, policy mismatch)."""


class CounterMissing(TPMError):
    """The monotonic counter is not defined on this TPM: never defined, or the
    TPM owner undefined it. Never to be read as zero."""


class CounterMismatch(TPMError):
    """The NV index at a counter's handle is not the counter asked for: not a
    counter of the kind this seam defines (another type, size, name algorithm or
    attributes), or not the definition an increment named. Someone else put it
    there."""


class TPM(Protocol):
    """A trusted platform module with a SHA-384 PCR bank."""

    def pcr_read(self, index: int) -> bytes:
        """The current value of PCR ``index``."""
        ...

    def pcr_extend(self, index: int, digest: bytes) -> None:
        """Extend PCR ``index`` with a 48-byte ``digest``; locked PCRs refuse."""
        ...

    def attest(
        self,
        *,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
        user_data: bytes | None = None,
    ) -> bytes:
        """An attestation document over the current PCRs binding these fields."""
        ...

    def seal(self, data: bytes, pcr_indices: Sequence[int]) -> bytes:
        """An opaque blob that :meth:`unseal` opens only while the named PCRs
        still hold the values they have now."""
        ...

    def unseal(self, blob: bytes) -> bytes:
        """The data sealed in ``blob``; :class:`TPMError` if the PCRs changed."""
        ...

    def measured_hmac(self, pcr_indices: Sequence[int], message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under this TPM's key for the current
        values of the PCRs ``pcr_indices``.

        The key is fixed by this TPM's storage seed and those values: the same
        state gives the same tag after every restart, any other state (or TPM)
        an unrelated one, and no caller ever sees the key. The TPM uses it only
        while the PCRs hold the values it belongs to, so nobody -- the TPM
        owner included -- can compute a tag for a state the machine is not in.
        ``message`` is at most :data:`MAX_MEASURED_HMAC_MESSAGE` bytes;
        :class:`TPMError` if the PCRs change while the tag is computed.

        Every caller in one state shares the key, so each prefixes its
        messages with a domain of its own, and none hands a tag over a message
        someone else chose back to them: that tag is as good as the key for it.
        """
        ...

    def counter_define(self, counter: int) -> bytes:
        """Define monotonic counter ``counter`` afresh and return its NV name.

        The name is unique to this definition. The counter is initialised
        before this returns, so it then holds more than any counter deleted
        from this TPM ever held. :class:`TPMError` if ``counter`` is already
        defined (this never replaces a counter).
        """
        ...

    def counter_name(self, counter: int) -> bytes:
        """The NV name of counter ``counter`` as defined now.

        :class:`CounterMissing` if it is not defined; :class:`CounterMismatch` if
        the index there is not a counter as :meth:`counter_define` makes them.
        """
        ...

    def counter_read(self, counter: int) -> int:
        """The value of monotonic counter ``counter`` (survives reboots);
        :class:`CounterMissing` if it is not defined."""
        ...

    def counter_increment(self, counter: int, *, expected_name: bytes | None = None) -> int:
        """Advance counter ``counter`` by one and return the new value;
        :class:`CounterMissing` if it is not defined (this never creates one).

        With ``expected_name``, the TPM increments only the definition with that
        NV name, checked by the same command that increments (a TPM 2.0 HMAC
        session covers the index's name): a counter swapped after the caller
        checked it raises :class:`CounterMismatch` and is left alone.
        """
        ...

    def random_bytes(self, n: int) -> bytes:
        """``n`` bytes from the TPM's random number generator."""
        ...
