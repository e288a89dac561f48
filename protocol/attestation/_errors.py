"""Typed verification failures: every rejection names the check that failed.

A caller (and a test) can tell *why* a document was refused from
:attr:`AttestationError.check` alone; the message adds field names, indices
and sizes, never field contents (a document's ``user_data`` may carry
anything, and none of it belongs in a log line).
"""

from __future__ import annotations

import enum


class Check(enum.StrEnum):
    """The checks a piece of evidence passes through, in order."""

    #: No authenticator is registered for the evidence kind.
    KIND = "kind"
    #: Empty or larger than the evidence size bound.
    SIZE = "size"
    #: Not strict CBOR: malformed, trailing bytes, tags, duplicate keys, floats.
    CBOR = "cbor"
    #: Not a COSE_Sign1 untagged 4-element array of the right types.
    COSE_STRUCTURE = "cose_structure"
    #: Protected header other than exactly ``{1: -35}`` (ES384).
    COSE_ALGORITHM = "cose_algorithm"
    #: A payload field is missing, mistyped, oversized or unknown.
    PAYLOAD_FIELD = "payload_field"
    #: ``digest`` names anything but SHA384.
    DIGEST = "digest"
    #: A certificate does not parse or uses an unsupported algorithm or extension.
    CERTIFICATE = "certificate"
    #: The first certificate of the bundle is not the pinned root.
    CHAIN_ROOT = "chain_root"
    #: A certificate's issuer is not the subject of the one before it.
    CHAIN_ISSUER = "chain_issuer"
    #: A certificate's signature does not verify under its issuer's key.
    CHAIN_SIGNATURE = "chain_signature"
    #: A certificate is expired or not yet valid at the verification time.
    CHAIN_VALIDITY = "chain_validity"
    #: A CA lacks ``cA=TRUE`` or the signing certificate claims to be a CA.
    CHAIN_BASIC_CONSTRAINTS = "chain_basic_constraints"
    #: A CA's pathLenConstraint is exceeded by the CAs below it.
    CHAIN_PATH_LENGTH = "chain_path_length"
    #: A CA without keyCertSign or a signing certificate without digitalSignature.
    CHAIN_KEY_USAGE = "chain_key_usage"
    #: The document signature does not verify under the signing certificate.
    SIGNATURE = "signature"
    # TPM 2.0 quote evidence (protocol.attestation.tpm2_quote):
    #: The attestation key is not one the verifier trusts.
    ATTESTATION_KEY = "attestation_key"
    #: The signature scheme, its hash or the key type is not accepted.
    SIGNATURE_ALGORITHM = "signature_algorithm"
    #: TPMS_ATTEST.magic is not TPM_GENERATED_VALUE (0xff544347).
    QUOTE_MAGIC = "quote_magic"
    #: TPMS_ATTEST.type is not TPM_ST_ATTEST_QUOTE (0x8018).
    QUOTE_TYPE = "quote_type"
    #: extraData does not commit to the nonce, public key and user data carried.
    QUALIFYING_DATA = "qualifying_data"
    #: The quoted PCR selection is not exactly the reported SHA-384 PCRs.
    PCR_SELECTION = "pcr_selection"
    #: pcrDigest differs from the digest of the reported PCR values.
    PCR_DIGEST = "pcr_digest"
    #: The timestamp is older than the maximum age or lies in the future.
    FRESHNESS = "freshness"
    #: The nonce is missing or differs from the expected one.
    NONCE = "nonce"
    #: The bound public key is missing or differs from the expected one.
    BOUND_KEY = "bound_key"
    #: ``user_data`` differs from the expected value.
    USER_DATA = "user_data"
    #: The PCR values match no allowed release (or show debug mode).
    PCR_POLICY = "pcr_policy"


class AttestationError(Exception):
    """Evidence was rejected; :attr:`check` names the failed check."""

    def __init__(self, check: Check, detail: str, *, field: str | None = None) -> None:
        self.check = check
        self.field = field
        self.detail = detail
        where = f" [{field}]" if field is not None else ""
        super().__init__(f"{check.value}{where}: {detail}")


class MalformedEvidence(AttestationError):
    """Size, encoding, structure or field-type failures (nothing was trusted yet)."""


class UnsupportedEvidence(AttestationError):
    """No authenticator is registered for this kind of evidence."""


class UntrustedChain(AttestationError):
    """The signing certificate does not chain to the pinned root under the rules."""


class BadSignature(AttestationError):
    """The evidence signature does not verify."""


class StaleEvidence(AttestationError):
    """Freshness failed: too old, from the future, or the wrong nonce."""


class BindingMismatch(AttestationError):
    """The evidence binds a different key or user data than expected."""


class PolicyViolation(AttestationError):
    """The measured PCR values are not those of an allowed release."""


class ConfigurationError(ValueError):
    """Verifier configuration (a PCR policy, a trust anchor) is malformed.

    Not a verdict on evidence: raised while loading configuration.
    """
