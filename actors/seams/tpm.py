"""The TPM seam: everything a node asks of its trusted platform module.

Backends: ``simulations.nitrotpm.SimulatedNitroTPM`` (deterministic from a
seed) and the tpm2-pytss backend in ``nodes/tpm`` (a TPM 2.0 device, swtpm in
tests, NitroTPM on EC2). Calls are synchronous because real TPM commands are
blocking device I/O; async callers run them in a worker thread.

PCR values are SHA-384 (48 bytes); extending computes
``new = SHA384(old || digest)`` where ``digest`` is 48 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class TPMError(Exception):
    """A TPM command failed (device error, injected fault, policy mismatch)."""


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

    def counter_read(self, counter: int) -> int:
        """The value of monotonic counter ``counter`` (survives reboots)."""
        ...

    def counter_increment(self, counter: int) -> int:
        """Advance monotonic counter ``counter`` by one and return the new value."""
        ...

    def random_bytes(self, n: int) -> bytes:
        """``n`` bytes from the TPM's random number generator."""
        ...
