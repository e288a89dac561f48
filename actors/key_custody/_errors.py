"""The key-custody room's own errors (the format errors, which these extend,
are :mod:`protocol.key_custody`'s). None carries key material or quotes input."""

from __future__ import annotations

from protocol.key_custody import Denial, KeyCustodyError, KeyringError


class UnmeasuredKekSelection(KeyringError):
    """A KEK was to be sealed to PCRs that do not include every register of the
    measured state (``protocol.measurement.MEASURED_PCRS``): it would unseal on
    a machine running another image or release."""


class CommitInterrupted(KeyringError):
    """A keyring commit stopped after its file may have been written, so that
    version number may be taken on disk. The vault commits nothing more until
    it is opened again from the stored file (see ``KeyVault._commit``)."""


class KeyReleaseDenied(KeyCustodyError):
    """A data key was not released; :attr:`denial` names the failed check."""

    def __init__(self, denial: Denial, detail: str, *, attestation_check: str | None = None):
        self.denial = denial
        self.attestation_check = attestation_check
        self.detail = detail
        suffix = f" ({attestation_check})" if attestation_check else ""
        super().__init__(f"data key release denied: {denial.value}{suffix}: {detail}")
