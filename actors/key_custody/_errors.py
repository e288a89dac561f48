"""Key-custody errors. Each names the check that failed; none carries key material."""

from __future__ import annotations

import enum


class KeyCustodyError(Exception):
    """Base class of every key-custody failure."""


class KeyringError(KeyCustodyError):
    """The keyring is malformed, or an operation does not fit its current state."""


class Denial(enum.StrEnum):
    """Why a data key was not released. Sent back to the requester as-is."""

    #: The request's nonce was never issued by this keys node or was already used.
    UNKNOWN_CHALLENGE = "unknown_challenge"
    #: The nonce was issued too long ago.
    EXPIRED_CHALLENGE = "expired_challenge"
    #: No key policy exists for the model (no logged release serves it).
    NO_POLICY = "no_policy"
    #: The attestation document failed verification (see ``attestation_check``).
    ATTESTATION = "attestation"
    #: The model or key version is unknown, or the version is no longer served.
    UNKNOWN_KEY = "unknown_key"
    #: The KEK could not be unsealed: this keys node's own PCRs changed.
    KEK_SEALED = "kek_sealed"
    #: The request itself is malformed.
    MALFORMED = "malformed"


class KeyReleaseDenied(KeyCustodyError):
    """A data key was not released; :attr:`denial` names the failed check."""

    def __init__(self, denial: Denial, detail: str, *, attestation_check: str | None = None):
        self.denial = denial
        self.attestation_check = attestation_check
        self.detail = detail
        suffix = f" ({attestation_check})" if attestation_check else ""
        super().__init__(f"data key release denied: {denial.value}{suffix}: {detail}")


class EnvelopeError(KeyCustodyError):
    """A key envelope could not be opened: wrong recipient, tampered or mismatched."""
