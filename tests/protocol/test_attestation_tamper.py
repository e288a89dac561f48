"""Tamper corpus: each forged or broken document is rejected for the right reason.

Most cases change one thing and then *re-sign* with the simulated PKI's
keys, so the document gets past every earlier check and the named check is
the one that must catch it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from protocol.attestation import (
    MAX_EVIDENCE_BYTES,
    PROTECTED_ES384,
    AttestationError,
    AttestationVerifier,
    Check,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    PcrPolicy,
    PcrRelease,
    TrustAnchor,
    encode_cose_sign1,
    noise_key_binding,
)
from simulations.nitrotpm import (
    IssuedCertificate,
    SimulatedChain,
    SimulatedNitroPKI,
    derive_p384_key,
    encode_payload,
    issue_certificate,
    nitrotpm_fields,
    sign_payload,
)

T0 = 1_760_003_600_000  # on an hour boundary: the signing certificate starts here
NOW = T0 + 60_000
PKI = SimulatedNitroPKI("tamper-corpus")
CHAIN = PKI.chain_for("sim-i-0123456789abcdef0", T0)
ANCHOR = TrustAnchor(PKI.root_der)
NONCE = b"\x11" * 32
BINDING = noise_key_binding(b"\x22" * 32)
USER_DATA = b"canary-user-data-7f3e"
PCRS = {index: bytes([index]) * 48 for index in range(24)}
PCRS[0] = b"\xa0" * 48  # a production (non-debug) PCR0


def _fields(**changes: object) -> dict[str, object]:
    fields = nitrotpm_fields(
        module_id="sim-i-0123456789abcdef0-tpm0000000000000000",
        timestamp_ms=T0,
        pcrs=PCRS,
        certificate=CHAIN.signing.der,
        cabundle=CHAIN.cabundle,
        public_key=BINDING,
        user_data=USER_DATA,
        nonce=NONCE,
    )
    for name, value in changes.items():
        if value is _DROP:
            del fields[name]
        else:
            fields[name] = value
    return fields


_DROP = object()


def _doc(chain: SimulatedChain = CHAIN, **changes: object) -> bytes:
    fields = _fields(**changes)
    if "certificate" not in changes and "cabundle" not in changes and chain is not CHAIN:
        fields["certificate"] = chain.signing.der
        fields["cabundle"] = list(chain.cabundle)
    return sign_payload(encode_payload(fields), chain.signing.private_key)


GOOD = _doc()


def _flip(data: bytes, index: int, bit: int = 0) -> bytes:
    tampered = bytearray(data)
    tampered[index] ^= 1 << bit
    return bytes(tampered)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC)


def _leaf(
    *,
    issuer: IssuedCertificate | None = None,
    not_before_ms: int = T0,
    not_after_ms: int = T0 + 3 * 3_600_000,
    ca: bool | None = False,
    digital_signature: bool = True,
    key: ec.EllipticCurvePrivateKey | None = None,
    subject_cn: str = "variant-leaf",
) -> IssuedCertificate:
    return issue_certificate(
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, subject_cn)]),
        subject_key=key or derive_p384_key(b"variants", subject_cn),
        issuer=issuer or CHAIN.authorities[-1],
        serial=7,
        not_before=_utc(not_before_ms),
        not_after=_utc(not_after_ms),
        ca=ca,
        digital_signature=digital_signature,
    )


def _chain_with_leaf(leaf: IssuedCertificate) -> SimulatedChain:
    return SimulatedChain(authorities=CHAIN.authorities, signing=leaf)


def _extra_ca_chain(*, extra_is_ca: bool = True, key_cert_sign: bool = True) -> SimulatedChain:
    # instance (pathLen 0) -> extra CA -> leaf: one CA too many below instance.
    extra = issue_certificate(
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "extra-ca")]),
        subject_key=derive_p384_key(b"variants", "extra-ca"),
        issuer=CHAIN.authorities[-1],
        serial=9,
        not_before=_utc(T0),
        not_after=_utc(T0 + 86_400_000),
        ca=extra_is_ca,
        key_cert_sign=key_cert_sign,
    )
    return SimulatedChain(authorities=(*CHAIN.authorities, extra), signing=_leaf(issuer=extra))


def _instance_not_ca_chain() -> SimulatedChain:
    zonal = CHAIN.authorities[2]
    instance = issue_certificate(
        subject=CHAIN.authorities[3].subject,
        subject_key=CHAIN.authorities[3].private_key,
        issuer=zonal,
        serial=11,
        not_before=_utc(T0),
        not_after=_utc(T0 + 86_400_000),
        ca=False,
        key_cert_sign=True,
    )
    return SimulatedChain(
        authorities=(*CHAIN.authorities[:3], instance), signing=_leaf(issuer=instance)
    )


def _instance_without_cert_sign_chain() -> SimulatedChain:
    instance = issue_certificate(
        subject=CHAIN.authorities[3].subject,
        subject_key=CHAIN.authorities[3].private_key,
        issuer=CHAIN.authorities[2],
        serial=12,
        not_before=_utc(T0),
        not_after=_utc(T0 + 86_400_000),
        ca=True,
        path_length=0,
        digital_signature=True,
    )
    return SimulatedChain(
        authorities=(*CHAIN.authorities[:3], instance), signing=_leaf(issuer=instance)
    )


def _sha256_signed_leaf() -> SimulatedChain:
    instance = CHAIN.authorities[-1]
    key = derive_p384_key(b"variants", "sha256-leaf")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "sha256")]))
        .issuer_name(instance.subject)
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(_utc(T0))
        .not_valid_after(_utc(T0 + 3_600_000))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(instance.private_key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = IssuedCertificate(der=cert.public_bytes(Encoding.DER), certificate=cert, private_key=key)
    return _chain_with_leaf(leaf)


def _leaf_with_unknown_critical_extension() -> SimulatedChain:
    instance = CHAIN.authorities[-1]
    key = derive_p384_key(b"variants", "critical-ext-leaf")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "critical")]))
        .issuer_name(instance.subject)
        .public_key(key.public_key())
        .serial_number(8)
        .not_valid_before(_utc(T0))
        .not_valid_after(_utc(T0 + 3_600_000))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        # A constraint this verifier does not enforce: it must refuse, not ignore.
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CODE_SIGNING]), critical=True
        )
        .sign(instance.private_key, hashes.SHA384(), ecdsa_deterministic=True)
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = IssuedCertificate(der=cert.public_bytes(Encoding.DER), certificate=cert, private_key=key)
    return _chain_with_leaf(leaf)


def _instance_without_basic_constraints_chain() -> SimulatedChain:
    instance = issue_certificate(
        subject=CHAIN.authorities[3].subject,
        subject_key=CHAIN.authorities[3].private_key,
        issuer=CHAIN.authorities[2],
        serial=13,
        not_before=_utc(T0),
        not_after=_utc(T0 + 86_400_000),
        ca=None,
        key_cert_sign=True,
    )
    return SimulatedChain(
        authorities=(*CHAIN.authorities[:3], instance), signing=_leaf(issuer=instance)
    )


def _forged(**changes: object) -> bytes:
    # A valid chain but a signature by a key outside it, over otherwise broken fields.
    return sign_payload(encode_payload(_fields(**changes)), derive_p384_key(b"variants", "rogue"))


def _p256_leaf_doc() -> bytes:
    instance = CHAIN.authorities[-1]
    key = ec.derive_private_key(12345, ec.SECP256R1())
    leaf = issue_certificate(
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "p256")]),
        subject_key=key,  # type: ignore[arg-type]
        issuer=instance,
        serial=6,
        not_before=_utc(T0),
        not_after=_utc(T0 + 3_600_000),
        ca=False,
        digital_signature=True,
    )
    fields = _fields(certificate=leaf.der)
    return sign_payload(encode_payload(fields), CHAIN.signing.private_key)


def _payload_bytes(raw_payload: bytes) -> bytes:
    return sign_payload(raw_payload, CHAIN.signing.private_key)


def _duplicate_key_payload() -> bytes:
    fields = _fields()
    body = b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in fields.items())
    body += cbor2.dumps("nonce") + cbor2.dumps(b"\x00" * 32)
    return _payload_bytes(b"\xbf" + body + b"\xff")


def _reframe(*parts: object) -> bytes:
    return cbor2.dumps(list(parts))


def _good_parts() -> tuple[bytes, bytes, bytes]:
    protected, _, payload, signature = cbor2.loads(GOOD)
    return protected, payload, signature


def _signed_with_header(protected: bytes) -> bytes:
    return sign_payload(encode_payload(_fields()), CHAIN.signing.private_key, protected=protected)


def _signed_by_other_key() -> bytes:
    return sign_payload(encode_payload(_fields()), derive_p384_key(b"variants", "rogue"))


def _foreign_root_doc() -> bytes:
    other = SimulatedNitroPKI("someone-else").chain_for("sim-i-0123456789abcdef0", T0)
    return _doc(chain=other)


def _swapped_bundle_doc() -> bytes:
    root, regional, zonal, instance = CHAIN.cabundle
    return _doc(cabundle=[root, zonal, regional, instance])


def _leaf_issued_by_wrong_key() -> bytes:
    # Names the instance as issuer but is signed by an unrelated key.
    impostor = IssuedCertificate(
        der=CHAIN.authorities[-1].der,
        certificate=CHAIN.authorities[-1].certificate,
        private_key=derive_p384_key(b"variants", "impostor"),
    )
    return _doc(chain=_chain_with_leaf(_leaf(issuer=impostor)))


NO_EXPECTATIONS = Expectations(pcr_policy=None)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    check: Check
    field: str | None = None
    now_ms: int = NOW
    expectations: Expectations = NO_EXPECTATIONS


POLICY = PcrPolicy(releases=(PcrRelease.from_mapping("r1", {0: PCRS[0], 4: PCRS[4]}),))
_REQUIRED = ["module_id", "digest", "timestamp", "nitrotpm_pcrs", "certificate", "cabundle"]

CASES: list[Case] = [
    # -- size and framing -------------------------------------------------
    Case("empty", lambda: b"", Check.SIZE),
    Case("oversized", lambda: GOOD + b"\x00" * MAX_EVIDENCE_BYTES, Check.SIZE),
    Case("truncated-cbor", lambda: GOOD[:-10], Check.CBOR),
    Case("truncated-header", lambda: GOOD[:3], Check.CBOR),
    Case("trailing-bytes", lambda: GOOD + b"\xf6", Check.CBOR),
    Case("cose-tag-18", lambda: cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(GOOD))), Check.CBOR),
    Case("not-an-array", lambda: cbor2.dumps({"a": 1}), Check.COSE_STRUCTURE),
    Case("three-elements", lambda: _reframe(*_good_parts()), Check.COSE_STRUCTURE),
    Case(
        "payload-not-bstr",
        lambda: _reframe(PROTECTED_ES384, {}, "text", _good_parts()[2]),
        Check.COSE_STRUCTURE,
    ),
    Case(
        "unprotected-not-empty",
        lambda: _reframe(PROTECTED_ES384, {4: b"kid"}, *_good_parts()[1:]),
        Check.COSE_STRUCTURE,
    ),
    Case(
        "signature-95-bytes",
        lambda: encode_cose_sign1(PROTECTED_ES384, _good_parts()[1], _good_parts()[2][:95]),
        Check.COSE_STRUCTURE,
    ),
    Case("alg-es256", lambda: _signed_with_header(cbor2.dumps({1: -7})), Check.COSE_ALGORITHM),
    Case(
        "alg-extra-header",
        lambda: _signed_with_header(cbor2.dumps({1: -35, 4: b"k"})),
        Check.COSE_ALGORITHM,
    ),
    Case(
        "alg-non-canonical-encoding",
        lambda: _signed_with_header(b"\xa1\x01\x39\x00\x22"),
        Check.COSE_ALGORITHM,
    ),
    # -- payload fields ---------------------------------------------------
    *[
        Case(f"missing-{name}", lambda name=name: _doc(**{name: _DROP}), Check.PAYLOAD_FIELD, name)
        for name in _REQUIRED
    ],
    Case("payload-not-map", lambda: _payload_bytes(cbor2.dumps([1, 2])), Check.PAYLOAD_FIELD),
    Case("payload-duplicate-key", _duplicate_key_payload, Check.CBOR),
    Case("payload-float", lambda: _doc(timestamp=1.5e12), Check.CBOR),
    Case("payload-tagged-bignum", lambda: _doc(timestamp=1 << 70), Check.CBOR),
    Case("payload-unknown-key", lambda: _doc(extra=b"x"), Check.PAYLOAD_FIELD),
    Case("payload-both-pcr-maps", lambda: _doc(pcrs={0: PCRS[0]}), Check.PAYLOAD_FIELD),
    Case("module_id-mistyped", lambda: _doc(module_id=b"bytes"), Check.PAYLOAD_FIELD, "module_id"),
    Case("module_id-empty", lambda: _doc(module_id=""), Check.PAYLOAD_FIELD, "module_id"),
    Case(
        "module_id-oversized", lambda: _doc(module_id="m" * 257), Check.PAYLOAD_FIELD, "module_id"
    ),
    Case("digest-mistyped", lambda: _doc(digest=b"SHA384"), Check.PAYLOAD_FIELD, "digest"),
    Case("digest-wrong-name", lambda: _doc(digest="SHA256"), Check.DIGEST, "digest"),
    Case("timestamp-mistyped", lambda: _doc(timestamp="1"), Check.PAYLOAD_FIELD, "timestamp"),
    Case("timestamp-negative", lambda: _doc(timestamp=-5), Check.PAYLOAD_FIELD, "timestamp"),
    Case("timestamp-zero", lambda: _doc(timestamp=0), Check.PAYLOAD_FIELD, "timestamp"),
    Case("timestamp-bool", lambda: _doc(timestamp=True), Check.PAYLOAD_FIELD, "timestamp"),
    Case(
        "pcrs-mistyped", lambda: _doc(nitrotpm_pcrs=[PCRS[0]]), Check.PAYLOAD_FIELD, "nitrotpm_pcrs"
    ),
    Case("pcrs-empty", lambda: _doc(nitrotpm_pcrs={}), Check.PAYLOAD_FIELD, "nitrotpm_pcrs"),
    Case(
        "pcr-index-32",
        lambda: _doc(nitrotpm_pcrs={**PCRS, 32: PCRS[1]}),
        Check.PAYLOAD_FIELD,
        "nitrotpm_pcrs",
    ),
    Case(
        "pcr-index-text",
        lambda: _doc(nitrotpm_pcrs={"0": PCRS[0]}),
        Check.PAYLOAD_FIELD,
        "nitrotpm_pcrs",
    ),
    Case(
        "pcr-value-short",
        lambda: _doc(nitrotpm_pcrs={0: b"\x01" * 32}),
        Check.PAYLOAD_FIELD,
        "nitrotpm_pcrs",
    ),
    Case(
        "pcr-value-long",
        lambda: _doc(nitrotpm_pcrs={0: b"\x01" * 64}),
        Check.PAYLOAD_FIELD,
        "nitrotpm_pcrs",
    ),
    Case(
        "certificate-mistyped", lambda: _doc(certificate="der"), Check.PAYLOAD_FIELD, "certificate"
    ),
    Case(
        "certificate-oversized",
        lambda: _doc(certificate=b"\x30" * 1025),
        Check.PAYLOAD_FIELD,
        "certificate",
    ),
    Case("cabundle-mistyped", lambda: _doc(cabundle=b"x"), Check.PAYLOAD_FIELD, "cabundle"),
    Case("cabundle-empty", lambda: _doc(cabundle=[]), Check.PAYLOAD_FIELD, "cabundle"),
    Case("cabundle-item-mistyped", lambda: _doc(cabundle=["x"]), Check.PAYLOAD_FIELD, "cabundle"),
    Case(
        "cabundle-too-long",
        lambda: _doc(cabundle=[CHAIN.cabundle[0]] * 8),
        Check.PAYLOAD_FIELD,
        "cabundle",
    ),
    *[
        Case(
            f"{name}-mistyped", lambda name=name: _doc(**{name: "text"}), Check.PAYLOAD_FIELD, name
        )
        for name in ("public_key", "user_data", "nonce")
    ],
    *[
        Case(
            f"{name}-oversized",
            lambda name=name: _doc(**{name: b"\x00" * 1025}),
            Check.PAYLOAD_FIELD,
            name,
        )
        for name in ("public_key", "user_data", "nonce")
    ],
    # -- certificates and chain -------------------------------------------
    Case(
        "certificate-garbage", lambda: _doc(certificate=b"\x30\x03\x02\x01\x00"), Check.CERTIFICATE
    ),
    Case("leaf-p256-key", _p256_leaf_doc, Check.CERTIFICATE),
    Case("leaf-signed-sha256", lambda: _doc(chain=_sha256_signed_leaf()), Check.CERTIFICATE),
    Case("foreign-root", _foreign_root_doc, Check.CHAIN_ROOT),
    Case("bundle-missing-root", lambda: _doc(cabundle=list(CHAIN.cabundle[1:])), Check.CHAIN_ROOT),
    Case("bundle-order-swapped", _swapped_bundle_doc, Check.CHAIN_ISSUER),
    Case("leaf-signature-forged", _leaf_issued_by_wrong_key, Check.CHAIN_SIGNATURE),
    Case(
        "leaf-expired",
        lambda: _doc(chain=_chain_with_leaf(_leaf(not_after_ms=NOW - 1000))),
        Check.CHAIN_VALIDITY,
    ),
    Case(
        "leaf-not-yet-valid",
        lambda: _doc(chain=_chain_with_leaf(_leaf(not_before_ms=NOW + 1000))),
        Check.CHAIN_VALIDITY,
    ),
    Case(
        "instance-expired-at-verification-time",
        lambda: GOOD,
        Check.CHAIN_VALIDITY,
        now_ms=T0 + 30 * 86_400_000,
    ),
    Case(
        "leaf-is-ca",
        lambda: _doc(chain=_chain_with_leaf(_leaf(ca=True))),
        Check.CHAIN_BASIC_CONSTRAINTS,
    ),
    Case(
        "leaf-without-digital-signature",
        lambda: _doc(chain=_chain_with_leaf(_leaf(digital_signature=False))),
        Check.CHAIN_KEY_USAGE,
    ),
    Case("path-length-exceeded", lambda: _doc(chain=_extra_ca_chain()), Check.CHAIN_PATH_LENGTH),
    Case(
        "intermediate-not-ca",
        lambda: _doc(chain=_instance_not_ca_chain()),
        Check.CHAIN_BASIC_CONSTRAINTS,
    ),
    Case(
        "intermediate-without-basic-constraints",
        lambda: _doc(chain=_instance_without_basic_constraints_chain()),
        Check.CHAIN_BASIC_CONSTRAINTS,
    ),
    Case(
        "leaf-unknown-critical-extension",
        lambda: _doc(chain=_leaf_with_unknown_critical_extension()),
        Check.CERTIFICATE,
    ),
    Case(
        "intermediate-without-cert-sign",
        lambda: _doc(chain=_instance_without_cert_sign_chain()),
        Check.CHAIN_KEY_USAGE,
    ),
    # -- signature ----------------------------------------------------------
    *[
        Case(
            f"signature-bit-{i}", lambda i=i: _flip(GOOD, len(GOOD) - 1 - i, i % 8), Check.SIGNATURE
        )
        for i in (0, 13, 47, 48, 95)
    ],
    Case("payload-byte-flip-pcr", lambda: _flip(GOOD, GOOD.index(PCRS[5]) + 3), Check.SIGNATURE),
    Case("payload-byte-flip-nonce", lambda: _flip(GOOD, GOOD.index(NONCE) + 1), Check.SIGNATURE),
    Case(
        "payload-byte-flip-module-id",
        lambda: _flip(GOOD, GOOD.index(b"sim-i-") + 2),
        Check.SIGNATURE,
    ),
    Case("signed-by-other-key", _signed_by_other_key, Check.SIGNATURE),
    # Verify before use: fields beyond the chain are judged only after the
    # signature, so a forgery is refused as a forgery whatever else it breaks.
    Case("forged-with-mistyped-module-id", lambda: _forged(module_id=b"x"), Check.SIGNATURE),
    Case("forged-with-wrong-digest", lambda: _forged(digest="SHA256"), Check.SIGNATURE),
    Case("forged-with-bad-pcrs", lambda: _forged(nitrotpm_pcrs={99: b""}), Check.SIGNATURE),
    Case("forged-with-oversized-nonce", lambda: _forged(nonce=b"\x00" * 2048), Check.SIGNATURE),
    # -- appraisal ----------------------------------------------------------
    Case(
        "stale-timestamp",
        lambda: GOOD,
        Check.FRESHNESS,
        expectations=Expectations(pcr_policy=None, max_age_ms=59_999),
    ),
    Case(
        "future-timestamp",
        lambda: _doc(timestamp=NOW + 31_000),
        Check.FRESHNESS,
    ),
    Case(
        "wrong-nonce",
        lambda: GOOD,
        Check.NONCE,
        expectations=Expectations(pcr_policy=None, expected_nonce=b"\x12" * 32),
    ),
    Case(
        "missing-nonce",
        lambda: _doc(nonce=None),
        Check.NONCE,
        expectations=Expectations(pcr_policy=None, expected_nonce=NONCE),
    ),
    Case(
        "wrong-bound-key",
        lambda: GOOD,
        Check.BOUND_KEY,
        expectations=Expectations(
            pcr_policy=None, expected_public_key=noise_key_binding(b"\x23" * 32)
        ),
    ),
    Case(
        "raw-key-instead-of-binding",
        lambda: _doc(public_key=b"\x22" * 32),
        Check.BOUND_KEY,
        expectations=Expectations(pcr_policy=None, expected_public_key=BINDING),
    ),
    Case(
        "wrong-user-data",
        lambda: GOOD,
        Check.USER_DATA,
        expectations=Expectations(pcr_policy=None, expected_user_data=b"other"),
    ),
    Case(
        "pcr-outside-policy",
        lambda: _doc(nitrotpm_pcrs={**PCRS, 4: b"\x44" * 48}),
        Check.PCR_POLICY,
        expectations=Expectations(pcr_policy=POLICY),
    ),
    Case(
        "pcr-missing-from-document",
        lambda: _doc(nitrotpm_pcrs={0: PCRS[0]}),
        Check.PCR_POLICY,
        expectations=Expectations(pcr_policy=POLICY),
    ),
    Case(
        "debug-pcr0",
        lambda: _doc(nitrotpm_pcrs={**PCRS, 0: bytes(48)}),
        Check.PCR_POLICY,
        expectations=Expectations(
            pcr_policy=PcrPolicy(releases=(PcrRelease.from_mapping("r", {4: PCRS[4]}),))
        ),
    ),
]


def test_corpus_is_large_enough_and_names_are_unique() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


def test_untampered_document_passes_every_expectation() -> None:
    verifier = AttestationVerifier([NitroAuthenticator(ANCHOR)])
    verified = verifier.verify(
        GOOD,
        kind=DocumentKind.NITRO,
        expectations=Expectations(
            pcr_policy=POLICY,
            max_age_ms=60_000,
            expected_nonce=NONCE,
            expected_public_key=BINDING,
            expected_user_data=USER_DATA,
        ),
        now_ms=NOW,
    )
    assert verified.release == "r1"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_tampered_document_is_rejected_for_the_named_reason(case: Case) -> None:
    verifier = AttestationVerifier([NitroAuthenticator(ANCHOR)])
    document = case.build()
    with pytest.raises(AttestationError) as caught:
        verifier.verify(
            document, kind=DocumentKind.NITRO, expectations=case.expectations, now_ms=case.now_ms
        )
    assert caught.value.check is case.check, str(caught.value)
    if case.field is not None:
        assert caught.value.field == case.field
    # Messages name checks, fields and sizes, never field contents.
    assert NONCE.hex() not in str(caught.value)
    assert USER_DATA.decode() not in str(caught.value)
