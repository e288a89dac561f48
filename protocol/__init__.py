"""Pure wire formats and cryptography (sans-IO): bytes in, values or events out.

No sockets, no clocks, no randomness drawn here (callers pass entropy and
times in), no imports from ``actors``, ``nodes``, ``simulations`` or
``mantle`` -- the layering contracts in ``.importlinter`` check it.

Errors
------

Every exception the package defines, under its base (the subpackage that
exports it in parentheses; a second base after a comma). None carries a
message's contents, a document's bytes or any other input::

    Exception
    ├── AttestationError             (attestation; .check: Check)
    │   ├── BindingMismatch
    │   ├── MalformedEvidence
    │   ├── PolicyViolation
    │   ├── StaleEvidence
    │   ├── UnsupportedEvidence
    │   ├── UntrustedChain
    │   └── QuoteError               (attestation.tpm2_quote; each also one of the above)
    │       ├── MalformedQuote
    │       ├── QuoteMagicMismatch
    │       ├── QuoteNonceMismatch
    │       ├── QuotePcrDigestMismatch
    │       ├── QuotePcrSelectionMismatch
    │       ├── QuoteQualifyingDataMismatch
    │       ├── QuoteSignatureInvalid
    │       ├── QuoteTypeMismatch
    │       ├── UnsupportedQuoteSignature
    │       └── UntrustedAttestationKey
    ├── CounterRefused               (counter_binding; .check: CounterCheck)
    ├── E2EError                     (e2e; .check: E2ECheck)
    │   └── ReceiptError
    ├── KeyCustodyError              (key_custody)
    │   ├── EnvelopeError            .denial: Denial
    │   └── KeyringError
    │       └── KeyringRefused       .check: KeyringCheck
    ├── MessageError                 (messages; .check: MessageCheck)
    │   ├── MessageDecodeError
    │   ├── MessageDefinitionError   , TypeError
    │   └── MessageEncodeError
    ├── NoiseError                   (noise)
    │   ├── NoiseConfigError         , ValueError
    │   ├── NoiseDecryptError
    │   ├── NoiseHandshakeError
    │   │   └── NoiseInvalidPublicKey
    │   ├── NoiseMessageTooLarge
    │   ├── NoiseNonceExhausted
    │   ├── NoiseProtocolNameError   , ValueError
    │   │   └── PatternValidityError
    │   └── NoiseStateError
    ├── OpenAIRequestError           (openai; .check: RequestCheck, .param, .status)
    ├── ReleaseError                 (release)
    │   ├── ArtifactMismatch         .check: ArtifactCheck
    │   ├── BelowThreshold
    │   │   ├── BadSignature
    │   │   └── UnknownSigner
    │   ├── Expired
    │   ├── MalformedRelease
    │   ├── NotInLog
    │   ├── SourceTreeMismatch       .check: SourceMismatchCheck
    │   ├── UntrustedRoot
    │   └── VersionRollback
    ├── SealedModelError             (sealed_model)
    │   ├── SealedModelAuthError
    │   ├── SealedModelFormatError
    │   └── SealedModelTruncatedError
    ├── SessionError                 (framing; .check: SessionCheck; its subclasses are drawn there)
    └── TlogError                    (tlog)
        ├── InvalidProof
        ├── InvalidTreeHead
        └── MalformedTlogData
    ValueError
    ├── ConfigurationError           (attestation: a policy or trust anchor that cannot be built)
    ├── CustomerDataNotText          (customer_data)
    └── MeasurementError             (measurement)
        ├── ImageMeasurementsError
        └── MissingPlatformRegisters
"""
