"""Evidence as the attestation room hands it around, and its two wire messages."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable
from typing import Annotated, Final, TypeAlias

from protocol.attestation import CHALLENGE_BYTES, MAX_EVIDENCE_BYTES, DocumentKind
from protocol.messages import (
    REGISTRY,
    Envelope,
    MaxLen,
    MessageCheck,
    MessageDecodeError,
    message,
)

#: Largest encoded :class:`EvidenceMessage` (document plus envelope overhead);
#: the first payload of a channel is held to this before it is parsed.
MAX_EVIDENCE_MESSAGE_BYTES: Final = MAX_EVIDENCE_BYTES + 64


class UnavailableCheck(enum.StrEnum):
    """Why this node cannot attest now (:attr:`AttestationUnavailable.check`)."""

    #: The TPM refused or failed the attestation command.
    TPM = "tpm"
    #: A timestamp-only document was asked of a kind that carries no time (a quote).
    NO_TIMESTAMP = "kind.no_timestamp"
    #: The cached timestamp-only document is too old to hand out.
    CACHE_STALE = "cache.stale"


class AttestationUnavailable(Exception):
    """This node cannot produce evidence now (TPM failure, or no fresh cached document)."""

    def __init__(self, check: UnavailableCheck) -> None:
        super().__init__(f"attestation unavailable: {check.value}")
        self.check = check


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    """An attestation document and its kind (declared next to it, never sniffed)."""

    kind: DocumentKind
    document: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, DocumentKind):
            raise TypeError("evidence kind must be a DocumentKind")
        if not isinstance(self.document, bytes) or not 0 < len(self.document) <= MAX_EVIDENCE_BYTES:
            raise ValueError(f"an attestation document is 1 to {MAX_EVIDENCE_BYTES} bytes")


Attest: TypeAlias = Callable[[bytes], Awaitable[Evidence]]
"""``nonce -> evidence``: this node's document over its current PCRs, binding
its Noise key and ``nonce`` (:meth:`AttestationService.attest`)."""

VerifyAttestation: TypeAlias = Callable[[bytes, Evidence, bytes], Awaitable[object] | object]
"""``(remote_static, evidence, expected_nonce) -> verdict``: raises to refuse
the peer (:class:`PeerAttestationVerifier`). The channel computes
``expected_nonce``; the verifier must require it and the key binding of
``remote_static``."""


@message("attest.evidence")
@dataclasses.dataclass(frozen=True, slots=True)
class EvidenceMessage:
    """One side's evidence on a channel. ``kind`` is ``None`` and ``document``
    empty when that side proves nothing (a customer's client)."""

    kind: DocumentKind | None
    document: Annotated[bytes, MaxLen(MAX_EVIDENCE_BYTES)]

    def __post_init__(self) -> None:
        if (self.kind is None) != (not self.document):
            raise ValueError("evidence has a kind exactly when it has a document")

    @classmethod
    def of(cls, evidence: Evidence | None) -> EvidenceMessage:
        if evidence is None:
            return cls(None, b"")
        return cls(evidence.kind, evidence.document)

    def evidence(self) -> Evidence | None:
        if self.kind is None:
            return None
        return Evidence(self.kind, self.document)


@message("attest.challenge")
@dataclasses.dataclass(frozen=True, slots=True)
class ChallengeMessage:
    """A verifier's request to re-attest over an open channel."""

    challenge: Annotated[bytes, MaxLen(CHALLENGE_BYTES)]

    def __post_init__(self) -> None:
        if len(self.challenge) != CHALLENGE_BYTES:
            raise ValueError(f"a challenge is {CHALLENGE_BYTES} bytes")


def encode_control(body: EvidenceMessage | ChallengeMessage) -> bytes:
    return REGISTRY.encode(Envelope.wrap(body), max_size=MAX_EVIDENCE_MESSAGE_BYTES)


def decode_control(data: bytes | memoryview) -> EvidenceMessage | ChallengeMessage:
    """One evidence or challenge message; :class:`MessageDecodeError` otherwise."""
    body = REGISTRY.decode(data, max_size=MAX_EVIDENCE_MESSAGE_BYTES).body
    if not isinstance(body, (EvidenceMessage, ChallengeMessage)):
        raise MessageDecodeError(MessageCheck.MESSAGE_UNEXPECTED_TYPE)
    return body
