"""Attestation evidence: one verifier for every source.

Authenticate by kind (Nitro COSE_Sign1 documents today; TPM 2.0 quotes plug in
through :class:`EvidenceAuthenticator`), then appraise with the shared checks
(freshness, nonce, bound key, user data, PCR policy). Every rejection is an
:class:`AttestationError` whose :attr:`~AttestationError.check` names the
failed check. Verification is pure: the caller passes the time (``now_ms``).

Typical use::

    verifier = AttestationVerifier([NitroAuthenticator(aws_nitro_root(), cache=ChainCache())])
    verified = verifier.verify(
        document,
        kind=DocumentKind.NITRO,
        expectations=Expectations(
            pcr_policy=policy,
            max_age_ms=300_000,
            expected_nonce=nonce,
            expected_public_key=noise_key_binding(peer_static_public),
        ),
        now_ms=now_ms,
    )
"""

from protocol.attestation._chain import ChainCache, TrustAnchor
from protocol.attestation._cose import (
    COSE_ALG_ES384,
    PROTECTED_ES384,
    der_to_raw_signature,
    encode_cose_sign1,
    sig_structure,
)
from protocol.attestation._errors import (
    AttestationError,
    BadSignature,
    BindingMismatch,
    Check,
    ConfigurationError,
    MalformedEvidence,
    PolicyViolation,
    StaleEvidence,
    UnsupportedEvidence,
    UntrustedChain,
)
from protocol.attestation._evidence import (
    MAX_EVIDENCE_BYTES,
    AttestationVerifier,
    AttestedClaims,
    DocumentKind,
    EvidenceAuthenticator,
    Expectations,
    VerifiedAttestation,
    appraise,
)
from protocol.attestation._nitro import (
    MAX_USER_FIELD_BYTES,
    AuthenticatedNitroDocument,
    NitroAuthenticator,
    NitroPayload,
    unverified_payload,
)
from protocol.attestation._policy import DEBUG_PCR0, PcrPolicy, PcrRelease
from protocol.attestation.binding import (
    CHALLENGE_BYTES,
    CHANNEL_ATTESTATION_DOMAIN,
    NOISE_KEY_BINDING_DOMAIN,
    TLS_KEY_BINDING_DOMAIN,
    channel_attestation_nonce,
    noise_key_binding,
    tls_key_binding,
)
from protocol.attestation.roots import AWS_NITRO_ROOT_PEM, AWS_NITRO_ROOT_SHA256, aws_nitro_root

__all__ = [
    "AWS_NITRO_ROOT_PEM",
    "AWS_NITRO_ROOT_SHA256",
    "CHALLENGE_BYTES",
    "CHANNEL_ATTESTATION_DOMAIN",
    "COSE_ALG_ES384",
    "DEBUG_PCR0",
    "MAX_EVIDENCE_BYTES",
    "MAX_USER_FIELD_BYTES",
    "NOISE_KEY_BINDING_DOMAIN",
    "PROTECTED_ES384",
    "TLS_KEY_BINDING_DOMAIN",
    "AttestationError",
    "AttestationVerifier",
    "AttestedClaims",
    "AuthenticatedNitroDocument",
    "BadSignature",
    "BindingMismatch",
    "ChainCache",
    "Check",
    "ConfigurationError",
    "DocumentKind",
    "EvidenceAuthenticator",
    "Expectations",
    "MalformedEvidence",
    "NitroAuthenticator",
    "NitroPayload",
    "PcrPolicy",
    "PcrRelease",
    "PolicyViolation",
    "StaleEvidence",
    "TrustAnchor",
    "UnsupportedEvidence",
    "UntrustedChain",
    "VerifiedAttestation",
    "appraise",
    "aws_nitro_root",
    "channel_attestation_nonce",
    "der_to_raw_signature",
    "encode_cose_sign1",
    "noise_key_binding",
    "sig_structure",
    "tls_key_binding",
    "unverified_payload",
]
