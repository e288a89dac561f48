"""Key-custody format errors. Each names the check that failed; none carries key
material or quotes its input."""

from __future__ import annotations

import enum


class KeyCustodyError(Exception):
    """Base class of every key-custody failure."""


class KeyringError(KeyCustodyError):
    """The keyring is malformed, or an operation does not fit its current state."""


class Denial(enum.StrEnum):
    """Why key custody refused: a data key release, an import or a grant.

    Sent back to the requester as-is (:class:`~protocol.key_custody.KeyDenied`),
    so each value names a check and nothing about the input.
    """

    #: The request's nonce was not issued by this keys node to this peer, or
    #: was already used.
    UNKNOWN_CHALLENGE = "unknown_challenge"
    #: The nonce was issued too long ago.
    EXPIRED_CHALLENGE = "expired_challenge"
    #: This keys node remembers as many used challenges as it will until some
    #: expire (a flood of requests); try again later.
    TOO_MANY_CHALLENGES = "too_many_challenges"
    #: No key policy exists for the model (no logged release serves it).
    NO_POLICY = "no_policy"
    #: The model's policy has an entry that does not pin the node image's
    #: platform registers and the application registers (a misconfigured lookup).
    UNMEASURED_POLICY = "unmeasured_policy"
    #: The attestation document failed verification (see ``attestation_check``).
    ATTESTATION = "attestation"
    #: The model or key version is unknown, or the version is no longer served.
    UNKNOWN_KEY = "unknown_key"
    #: The KEK could not be unsealed: this keys node's own PCRs changed.
    KEK_SEALED = "kek_sealed"
    #: The request itself is malformed.
    MALFORMED = "malformed"
    #: No verified release names a model provider key for the model: nobody may import.
    NO_PROVIDER_KEY = "no_provider_key"
    #: The envelope does not open as sealed by the expected sender's static key
    #: to ours in this context (another sender, tampered, or another purpose).
    UNAUTHENTICATED_SENDER = "unauthenticated_sender"


class EnvelopeError(KeyCustodyError):
    """A key envelope (a provider's import, a keys node's grant) was refused, or
    could not be sealed; :attr:`denial` names the failed check."""

    def __init__(self, denial: Denial, detail: str) -> None:
        self.denial = denial
        self.detail = detail
        super().__init__(f"key envelope refused: {denial.value}: {detail}")


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
