"""TPM 2.0 quote evidence: the strict TPMS_ATTEST/TPMT_SIGNATURE codec and the
quote verifier, without a TPM (quotes here are made by a software key that
marshals exactly what a TPM marshals; swtpm-made quotes are tested in
tests/nodes/test_tpm_device.py and run through the shared verifier suite in
tests/protocol/test_attestation_suite.py)."""

from __future__ import annotations

import contextlib
import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.attestation import AttestationError, Check, DocumentKind
from protocol.attestation import tpm2_quote as quote

NONCE = b"n" * 32
PCRS = {i: hashlib.sha384(bytes([i])).digest() for i in range(24)}


def spki(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


AK = ec.generate_private_key(ec.SECP384R1())
TRUST = quote.QuoteTrust.from_ak_public_keys([spki(AK)])


def make_attest(**changes: object) -> quote.QuoteAttest:
    fields: dict[str, object] = {
        "qualified_signer": b"\x00\x0c" + bytes(48),
        "extra_data": quote.qualifying_data(NONCE, b"pk", None),
        "clock": 123456,
        "reset_count": 1,
        "restart_count": 0,
        "safe": True,
        "firmware_version": 0x2023_0000_0000_0001,
        "pcr_selections": (quote.PcrSelection(quote.TpmAlg.SHA384, tuple(range(24))),),
        "pcr_digest": hashlib.sha384(b"".join(PCRS[i] for i in range(24))).digest(),
    }
    fields.update(changes)
    return quote.QuoteAttest(**fields)  # type: ignore[arg-type]


def sign(attest_bytes: bytes, key: ec.EllipticCurvePrivateKey = AK) -> bytes:
    r, s = decode_dss_signature(key.sign(attest_bytes, ec.ECDSA(hashes.SHA384())))
    size = (key.curve.key_size + 7) // 8
    return quote.encode_signature(
        quote.EcdsaSignature(quote.TpmAlg.SHA384, r.to_bytes(size, "big"), s.to_bytes(size, "big"))
    )


def make_document(attest: quote.QuoteAttest | None = None, **changes: object) -> bytes:
    attest_bytes = quote.encode_attest(attest or make_attest())
    fields: dict[str, object] = {
        "attest": attest_bytes,
        "signature": sign(attest_bytes),
        "ak_public": spki(AK),
        "pcrs": PCRS,
        "nonce": NONCE,
        "public_key": b"pk",
        "user_data": None,
    }
    fields.update(changes)
    return quote.encode_quote_document(quote.QuoteDocument(**fields))  # type: ignore[arg-type]


def rejected(document: bytes, expected_nonce: bytes | None = NONCE) -> Check:
    with pytest.raises(AttestationError) as caught:
        quote.verify_tpm2_quote(document, TRUST, expected_nonce=expected_nonce)
    return caught.value.check


def test_a_well_formed_quote_verifies() -> None:
    verified = quote.verify_tpm2_quote(make_document(), TRUST, expected_nonce=NONCE)
    assert dict(verified.pcrs) == PCRS
    assert verified.public_key == b"pk"
    assert verified.user_data is None
    assert verified.clock == 123456


def test_attest_codec_reads_the_tpm_layout() -> None:
    attest = make_attest()
    data = quote.encode_attest(attest)
    assert data[:6] == bytes.fromhex("ff544347 8018")
    assert quote.parse_attest(data) == attest


@pytest.mark.parametrize(
    ("attest", "check"),
    [
        (make_attest(magic=0xFF544348), Check.QUOTE_MAGIC),
        (make_attest(attest_type=0x8017), Check.QUOTE_TYPE),  # TPM_ST_ATTEST_CERTIFY
        (make_attest(extra_data=bytes(48)), Check.QUALIFYING_DATA),
        (make_attest(pcr_digest=bytes(48)), Check.PCR_DIGEST),
        (
            make_attest(
                pcr_selections=(quote.PcrSelection(quote.TpmAlg.SHA256, tuple(range(24))),)
            ),
            Check.PCR_SELECTION,
        ),
        (
            make_attest(pcr_selections=(quote.PcrSelection(quote.TpmAlg.SHA384, (0, 1)),)),
            Check.PCR_SELECTION,
        ),
        (make_attest(pcr_selections=()), Check.PCR_SELECTION),
    ],
)
def test_signed_but_wrong_attest_is_rejected_by_name(
    attest: quote.QuoteAttest, check: Check
) -> None:
    assert rejected(make_document(attest)) is check


def test_envelope_and_signature_faults_are_named() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    attest_bytes = quote.encode_attest(make_attest())
    assert rejected(make_document(), expected_nonce=b"other") is Check.NONCE
    assert rejected(make_document(ak_public=spki(other))) is Check.ATTESTATION_KEY
    assert rejected(make_document(signature=sign(attest_bytes, other))) is Check.SIGNATURE
    assert rejected(make_document(nonce=b"m" * 32)) is Check.QUALIFYING_DATA
    assert rejected(make_document(user_data=b"")) is Check.QUALIFYING_DATA  # absent != empty
    sha1_signature = bytes.fromhex("0018 0004") + bytes(4)
    assert rejected(make_document(signature=sha1_signature)) is Check.SIGNATURE_ALGORITHM
    rsa_signature = bytes.fromhex("0014 000c 0002 0000")
    assert rejected(make_document(signature=rsa_signature)) is Check.SIGNATURE_ALGORITHM


def test_attest_contents_are_judged_only_after_the_signature() -> None:
    # Each attest below would fail a content check; the AK and signature checks come first.
    other = ec.generate_private_key(ec.SECP384R1())

    def document(attest_bytes: bytes, signer: ec.EllipticCurvePrivateKey, ak: bytes) -> bytes:
        fields = cbor2.loads(make_document())
        fields.update(attest=attest_bytes, signature=sign(attest_bytes, signer), ak_public=ak)
        return cbor2.dumps(fields, canonical=True)

    broken = quote.encode_attest(make_attest(magic=0, extra_data=bytes(48), pcr_digest=b""))
    assert rejected(document(broken, other, spki(other))) is Check.ATTESTATION_KEY
    assert rejected(document(broken, other, spki(AK))) is Check.SIGNATURE
    assert rejected(document(b"\x00" * 7, other, spki(AK))) is Check.SIGNATURE
    # The same broken attest signed by the pinned AK is refused for its content.
    assert rejected(document(broken, AK, spki(AK))) is Check.QUOTE_MAGIC


def test_rsa_attestation_keys_are_refused_even_if_pinned() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    trust = quote.QuoteTrust.from_ak_public_keys([spki(rsa_key)])
    with pytest.raises(AttestationError) as caught:
        quote.verify_tpm2_quote(make_document(ak_public=spki(rsa_key)), trust, expected_nonce=None)
    assert caught.value.check is Check.SIGNATURE_ALGORITHM


def test_envelope_must_be_canonical_and_exact() -> None:
    document = make_document()
    fields = cbor2.loads(document)
    reordered = dict(reversed(fields.items()))
    assert rejected(cbor2.dumps(reordered)) is Check.CBOR  # keys out of canonical order
    assert rejected(cbor2.dumps({**fields, "extra": 1}, canonical=True)) is Check.PAYLOAD_FIELD
    assert rejected(cbor2.dumps({**fields, "version": 2}, canonical=True)) is Check.PAYLOAD_FIELD
    bad_pcrs = {**PCRS, 24: bytes(48)}
    assert (
        rejected(cbor2.dumps({**fields, "pcrs": bad_pcrs}, canonical=True)) is Check.PAYLOAD_FIELD
    )
    short = {**PCRS, 3: bytes(32)}
    assert rejected(cbor2.dumps({**fields, "pcrs": short}, canonical=True)) is Check.PAYLOAD_FIELD
    assert rejected(cbor2.dumps(cbor2.CBORTag(55799, fields))) is Check.CBOR
    assert rejected(b"\xff" * (quote.MAX_DOCUMENT_SIZE + 1)) is Check.SIZE


def test_authenticator_yields_shared_claims() -> None:
    authenticator = quote.Tpm2QuoteAuthenticator(TRUST)
    assert authenticator.kind is DocumentKind.TPM2_QUOTE
    claims = authenticator.authenticate(make_document(), now_ms=0)
    assert claims.timestamp_ms is None
    assert claims.nonce == NONCE
    assert claims.root_sha256 == quote.spki_fingerprint(spki(AK))


def test_qualifying_data_is_injective_over_field_boundaries() -> None:
    assert quote.qualifying_data(b"ab", b"c", None) != quote.qualifying_data(b"a", b"bc", None)
    assert quote.qualifying_data(None, None, None) != quote.qualifying_data(b"", None, None)
    assert len(quote.qualifying_data(b"x" * 1024, b"y" * 1024, b"z" * 1024)) == 48


# --------------------------------------------------------------------------- properties

_selections = st.lists(
    st.builds(
        quote.PcrSelection,
        hash_alg=st.sampled_from([a.value for a in quote.TpmAlg]),
        indices=st.lists(st.integers(0, 23), unique=True).map(lambda xs: tuple(sorted(xs))),
        size_of_select=st.just(3),
    ),
    max_size=3,
)
_attests = st.builds(
    quote.QuoteAttest,
    qualified_signer=st.binary(max_size=66),
    extra_data=st.binary(max_size=64),
    clock=st.integers(0, 2**64 - 1),
    reset_count=st.integers(0, 2**32 - 1),
    restart_count=st.integers(0, 2**32 - 1),
    safe=st.booleans(),
    firmware_version=st.integers(0, 2**64 - 1),
    pcr_selections=_selections.map(tuple),
    pcr_digest=st.binary(max_size=64),
)


@given(_attests)
@settings(max_examples=200, deadline=None)
def test_attest_round_trips(attest: quote.QuoteAttest) -> None:
    assert quote.parse_attest(quote.encode_attest(attest)) == attest


@given(_attests, st.data())
@settings(max_examples=200, deadline=None)
def test_truncated_or_extended_attest_is_a_typed_error(
    attest: quote.QuoteAttest, data: st.DataObject
) -> None:
    encoded = quote.encode_attest(attest)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(quote.MalformedQuote):
        quote.parse_attest(encoded[:cut])
    with pytest.raises(quote.MalformedQuote):
        quote.parse_attest(encoded + data.draw(st.binary(min_size=1, max_size=8)))


@given(st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_escape_as_untyped_errors(data: bytes) -> None:
    for decode in (quote.parse_attest, quote.parse_signature, quote.decode_quote_document):
        with contextlib.suppress(AttestationError):
            decode(data)
    with pytest.raises(AttestationError):
        quote.verify_tpm2_quote(data, TRUST, expected_nonce=None)


@given(st.binary(max_size=64), st.binary(max_size=64), st.sampled_from([0x000B, 0x000C, 0x000D]))
def test_signature_round_trips(r: bytes, s: bytes, hash_alg: int) -> None:
    signature = quote.EcdsaSignature(hash_alg, r, s)
    assert quote.parse_signature(quote.encode_signature(signature)) == signature
