"""Kind-independent verification: the claims every evidence kind yields and
the checks that apply to all of them.

Verification has two halves:

1. *Authentication* is specific to the kind of evidence. An
   :class:`EvidenceAuthenticator` checks sizes, encoding, the certificate
   chain to its pinned root and the signature, and only then returns the
   signed content as :class:`AttestedClaims`. Nitro documents (COSE_Sign1,
   ``protocol.attestation._nitro``) are one kind; TPM 2.0 quotes are another
   and plug in by implementing the same protocol for
   :attr:`DocumentKind.TPM2_QUOTE`.
2. *Appraisal* is shared (:func:`appraise`): freshness (maximum age and/or
   the expected nonce), the bound key, expected user data and the PCR policy,
   producing a :class:`VerifiedAttestation`.

:class:`AttestationVerifier` routes evidence to the authenticator registered
for its declared kind; the kind is never guessed from the bytes.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from protocol.attestation._errors import (
    BindingMismatch,
    Check,
    MalformedEvidence,
    StaleEvidence,
    UnsupportedEvidence,
)
from protocol.attestation._policy import DEBUG_PCR0, PcrPolicy

#: No evidence kind is larger than this; checked before any decoding.
MAX_EVIDENCE_BYTES = 16 * 1024
#: Default tolerance for a document timestamp ahead of the verifier's clock.
DEFAULT_MAX_FUTURE_SKEW_MS = 30_000


class DocumentKind(enum.StrEnum):
    """What produced a piece of evidence (declared by the transport, not sniffed)."""

    #: COSE_Sign1 attestation document from NitroTPM, Nitro Enclaves or the simulator.
    NITRO = "nitro"
    #: TPM2_Quote (TPMS_ATTEST) signed by an attestation key.
    TPM2_QUOTE = "tpm2-quote"


@dataclass(frozen=True, slots=True)
class AttestedClaims:
    """Signed content of authenticated evidence (chain and signature checked)."""

    kind: DocumentKind
    module_id: str
    #: Milliseconds since the Unix epoch; ``None`` for evidence without a wall clock.
    timestamp_ms: int | None
    #: PCR index -> value, as measured.
    pcrs: Mapping[int, bytes]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    #: SHA-256 of the pinned root's DER and of the signing certificate's DER.
    root_sha256: bytes
    signer_sha256: bytes


class EvidenceAuthenticator(Protocol):
    """Authenticates one kind of evidence; see the module docstring."""

    @property
    def kind(self) -> DocumentKind: ...

    def authenticate(self, evidence: bytes, *, now_ms: int) -> AttestedClaims:
        """Structure, sizes, chain (valid at ``now_ms``) and signature, or raise
        an :class:`~protocol.attestation.AttestationError`."""
        ...


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the relying party requires beyond authenticity.

    ``pcr_policy`` has no default on purpose: a caller states either a policy
    or, for inspection only, ``None``.
    """

    pcr_policy: PcrPolicy | None
    #: Reject evidence whose timestamp is older than this (ms), if set.
    max_age_ms: int | None = None
    #: The nonce this verifier issued, if any.
    expected_nonce: bytes | None = None
    #: The exact bytes the evidence must bind as ``public_key``, if set
    #: (for Noise peers: :func:`~protocol.attestation.noise_key_binding`).
    expected_public_key: bytes | None = None
    expected_user_data: bytes | None = None
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS

    def __post_init__(self) -> None:
        if self.max_age_ms is not None and self.max_age_ms < 0:
            raise ValueError("max_age_ms must not be negative")
        if self.max_future_skew_ms < 0:
            raise ValueError("max_future_skew_ms must not be negative")


@dataclass(frozen=True, slots=True)
class VerifiedAttestation:
    """Evidence that passed every check, with what it proved."""

    claims: AttestedClaims
    #: Name of the release whose PCR values matched; ``None`` without a policy.
    release: str | None
    verified_at_ms: int

    @property
    def kind(self) -> DocumentKind:
        return self.claims.kind

    @property
    def module_id(self) -> str:
        return self.claims.module_id

    @property
    def pcrs(self) -> Mapping[int, bytes]:
        return self.claims.pcrs

    @property
    def public_key(self) -> bytes | None:
        return self.claims.public_key

    @property
    def debug_mode(self) -> bool:
        """PCR0 is all zeros: a Nitro enclave started in debug mode."""
        return self.claims.pcrs.get(0) == DEBUG_PCR0


def _same(expected: bytes, actual: bytes | None) -> bool:
    return actual is not None and hmac.compare_digest(expected, actual)


def appraise(
    claims: AttestedClaims, expectations: Expectations, *, now_ms: int
) -> VerifiedAttestation:
    """The checks shared by every evidence kind, in a fixed order."""
    timestamp = claims.timestamp_ms
    if timestamp is not None and timestamp > now_ms + expectations.max_future_skew_ms:
        raise StaleEvidence(Check.FRESHNESS, "timestamp lies in the future")
    if expectations.max_age_ms is not None:
        if timestamp is None:
            raise StaleEvidence(Check.FRESHNESS, "evidence carries no timestamp to bound its age")
        age = now_ms - timestamp
        if age > expectations.max_age_ms:
            raise StaleEvidence(
                Check.FRESHNESS, f"evidence is {age} ms old, at most {expectations.max_age_ms}"
            )
    if expectations.expected_nonce is not None:
        if claims.nonce is None:
            raise StaleEvidence(Check.NONCE, "evidence carries no nonce")
        if not _same(expectations.expected_nonce, claims.nonce):
            raise StaleEvidence(Check.NONCE, "nonce differs from the one issued")
    if expectations.expected_public_key is not None and not _same(
        expectations.expected_public_key, claims.public_key
    ):
        raise BindingMismatch(Check.BOUND_KEY, "bound public key differs from the expected key")
    if expectations.expected_user_data is not None and not _same(
        expectations.expected_user_data, claims.user_data
    ):
        raise BindingMismatch(Check.USER_DATA, "user data differs from the expected value")
    release = None
    if expectations.pcr_policy is not None:
        release = expectations.pcr_policy.evaluate(claims.pcrs).name
    return VerifiedAttestation(claims=claims, release=release, verified_at_ms=now_ms)


class AttestationVerifier:
    """One verifier for every evidence source: authenticate by kind, then appraise."""

    __slots__ = ("_authenticators",)

    def __init__(self, authenticators: Iterable[EvidenceAuthenticator]) -> None:
        self._authenticators: dict[DocumentKind, EvidenceAuthenticator] = {}
        for authenticator in authenticators:
            if authenticator.kind in self._authenticators:
                raise ValueError(f"two authenticators for {authenticator.kind.value}")
            self._authenticators[authenticator.kind] = authenticator

    @property
    def kinds(self) -> frozenset[DocumentKind]:
        return frozenset(self._authenticators)

    def authenticate(self, evidence: bytes, *, kind: DocumentKind, now_ms: int) -> AttestedClaims:
        """Only the kind-specific half (no policy); for inspection tools."""
        authenticator = self._authenticators.get(kind)
        if authenticator is None:
            raise UnsupportedEvidence(Check.KIND, f"no authenticator for {kind.value} evidence")
        if not evidence or len(evidence) > MAX_EVIDENCE_BYTES:
            raise MalformedEvidence(
                Check.SIZE, f"evidence is {len(evidence)} bytes, 1 to {MAX_EVIDENCE_BYTES} allowed"
            )
        return authenticator.authenticate(evidence, now_ms=now_ms)

    def verify(
        self,
        evidence: bytes,
        *,
        kind: DocumentKind,
        expectations: Expectations,
        now_ms: int,
    ) -> VerifiedAttestation:
        """Authenticate ``evidence`` as of ``now_ms`` and appraise it."""
        claims = self.authenticate(evidence, kind=kind, now_ms=now_ms)
        return appraise(claims, expectations, now_ms=now_ms)
