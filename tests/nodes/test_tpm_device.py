"""The TPM 2.0 device backend against swtpm, and its quotes through the shared verifier.

Each test module run starts its own swtpm on free loopback ports with a fresh
state directory and stops it afterwards; tests that restart the TPM get their
own instance. Skips happen only when swtpm or tpm2-pytss is not installed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cbor2
import pytest
from _swtpm import (
    Swtpm,
    owner_define_counter,
    owner_measured_hmac,
    owner_undefine,
    read_nv_public,
    require_swtpm,
)

from actors.seams.tpm import TPM, CounterMismatch, CounterMissing, TPMError
from protocol.attestation import (
    AttestationError,
    AttestationVerifier,
    BadSignature,
    BindingMismatch,
    Check,
    DocumentKind,
    Expectations,
    MalformedEvidence,
    PcrPolicy,
    PcrRelease,
    PolicyViolation,
    StaleEvidence,
    UntrustedChain,
)
from protocol.attestation import tpm2_quote as quote

if TYPE_CHECKING:
    from nodes.tpm import TpmDeviceBackend

# The ESAPI logs expected TPM errors (an absent NV index, a refused policy) to
# stderr; the tests assert on the typed errors instead.
os.environ.setdefault("TSS2_LOG", "all+NONE")

NOW_MS = 1_760_000_000_000
NONCE = bytes(range(32))
BOUND_KEY = hashlib.sha256(b"noise static key").digest()
USER_DATA = b"release 2025.06.1"


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    require_swtpm()
    instance = Swtpm(tmp_path_factory.mktemp("swtpm"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def tpm(swtpm: Swtpm) -> Iterator[TpmDeviceBackend]:
    from nodes.tpm import TpmDeviceBackend

    backend = TpmDeviceBackend(swtpm.tcti)
    # On a booted machine firmware has measured itself into PCR0; a fresh
    # swtpm's all-zero PCR0 would read as Nitro debug mode to the policy.
    backend.pcr_extend(0, sha384(b"firmware"))
    yield backend
    backend.close()


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def verifier_for(tpm: TpmDeviceBackend) -> AttestationVerifier:
    trust = quote.QuoteTrust.from_ak_public_keys([tpm.attestation_key_public()])
    return AttestationVerifier([quote.Tpm2QuoteAuthenticator(trust)])


def current_policy(tpm: TpmDeviceBackend, name: str = "current") -> PcrPolicy:
    values = tpm.pcr_read_many(range(24))
    return PcrPolicy(releases=(PcrRelease.from_mapping(name, values),))


def expectations(policy: PcrPolicy | None, **overrides: object) -> Expectations:
    fields: dict[str, object] = {
        "pcr_policy": policy,
        "expected_nonce": NONCE,
        "expected_public_key": BOUND_KEY,
        "expected_user_data": USER_DATA,
    }
    fields.update(overrides)
    return Expectations(**fields)  # type: ignore[arg-type]


def reencode(document: bytes, **changes: object) -> bytes:
    """The same envelope with some fields replaced (what an attacker can do)."""
    fields = cbor2.loads(document)
    fields.update(changes)
    return cbor2.dumps(fields, canonical=True)


# --------------------------------------------------------------------------- the seam


def test_backend_satisfies_the_tpm_seam(tpm: TpmDeviceBackend) -> None:
    backend: TPM = tpm
    assert len(backend.random_bytes(100)) == 100


def test_pcr_extend_is_sha384_of_old_and_digest(tpm: TpmDeviceBackend) -> None:
    before = tpm.pcr_read(16)
    digests = [sha384(b"release"), sha384(b"model")]
    expected = before
    for digest in digests:
        tpm.pcr_extend(16, digest)
        expected = sha384(expected + digest)
    assert tpm.pcr_read(16) == expected
    assert len(expected) == 48


@pytest.mark.parametrize(("index", "digest"), [(24, bytes(48)), (-1, bytes(48)), (16, bytes(32))])
def test_pcr_extend_refuses_bad_arguments(tpm: TpmDeviceBackend, index: int, digest: bytes) -> None:
    with pytest.raises(TPMError):
        tpm.pcr_extend(index, digest)


def test_random_bytes_are_not_constant(tpm: TpmDeviceBackend) -> None:
    draws = {tpm.random_bytes(32) for _ in range(4)}
    assert len(draws) == 4
    assert tpm.random_bytes(0) == b""
    assert len(tpm.random_bytes(4096)) == 4096
    for bad in (4097, -1):
        with pytest.raises(TPMError):
            tpm.random_bytes(bad)


# --------------------------------------------------------------------------- quotes


def test_quote_verifies_through_the_shared_verifier(tpm: TpmDeviceBackend) -> None:
    document = tpm.attest(nonce=NONCE, public_key=BOUND_KEY, user_data=USER_DATA)
    policy = current_policy(tpm, "2025.06.1")
    verified = verifier_for(tpm).verify(
        document, kind=DocumentKind.TPM2_QUOTE, expectations=expectations(policy), now_ms=NOW_MS
    )
    assert verified.kind is DocumentKind.TPM2_QUOTE
    assert verified.release == "2025.06.1"
    assert verified.public_key == BOUND_KEY
    assert verified.claims.nonce == NONCE
    assert verified.claims.timestamp_ms is None
    assert sorted(verified.pcrs) == list(range(24))


def test_quote_fields_are_what_the_tpm_signed(tpm: TpmDeviceBackend) -> None:
    document = tpm.attest(nonce=NONCE, public_key=BOUND_KEY, user_data=None)
    envelope = quote.decode_quote_document(document)
    attest = quote.parse_attest(envelope.attest)
    assert envelope.attest[:4] == bytes.fromhex("ff544347")
    assert envelope.attest[4:6] == bytes.fromhex("8018")
    assert attest.extra_data == quote.qualifying_data(NONCE, BOUND_KEY, None)
    (selection,) = attest.pcr_selections
    assert selection.hash_alg == quote.TpmAlg.SHA384
    assert attest.pcr_digest == sha384(b"".join(envelope.pcrs[i] for i in range(24)))
    assert quote.parse_signature(envelope.signature).hash_alg == quote.TpmAlg.SHA384
    assert envelope.ak_public == tpm.attestation_key_public()


def _check_of(
    verifier: AttestationVerifier, document: bytes, exp: Expectations
) -> AttestationError:
    with pytest.raises(AttestationError) as caught:
        verifier.verify(document, kind=DocumentKind.TPM2_QUOTE, expectations=exp, now_ms=NOW_MS)
    return caught.value


def test_tampered_quotes_are_rejected_with_named_checks(tpm: TpmDeviceBackend) -> None:
    document = tpm.attest(nonce=NONCE, public_key=BOUND_KEY, user_data=USER_DATA)
    verifier = verifier_for(tpm)
    policy = current_policy(tpm)
    exp = expectations(policy)
    envelope = quote.decode_quote_document(document)

    def flipped(data: bytes, position: int) -> bytes:
        return data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]

    cases: list[tuple[bytes, Check, type[AttestationError]]] = [
        # Any change to the signed TPMS_ATTEST breaks the signature.
        (reencode(document, attest=flipped(envelope.attest, 20)), Check.SIGNATURE, BadSignature),
        (
            reencode(document, attest=flipped(envelope.attest, 0)),
            Check.SIGNATURE,
            BadSignature,
        ),
        # The r and s of the ECDSA signature.
        (
            reencode(document, signature=flipped(envelope.signature, 10)),
            Check.SIGNATURE,
            BadSignature,
        ),
        # Fields bound through extraData cannot be swapped.
        (reencode(document, nonce=bytes(32)), Check.QUALIFYING_DATA, BindingMismatch),
        (reencode(document, public_key=bytes(32)), Check.QUALIFYING_DATA, BindingMismatch),
        (reencode(document, user_data=b"other"), Check.QUALIFYING_DATA, BindingMismatch),
        # Reported PCR values must be the quoted ones.
        (
            reencode(document, pcrs={**envelope.pcrs, 16: sha384(b"forged")}),
            Check.PCR_DIGEST,
            BadSignature,
        ),
        (
            reencode(document, pcrs={i: v for i, v in envelope.pcrs.items() if i != 23}),
            Check.PCR_SELECTION,
            MalformedEvidence,
        ),
        (reencode(document, kind="nitro"), Check.PAYLOAD_FIELD, MalformedEvidence),
        (document + b"\x00", Check.CBOR, MalformedEvidence),
        (b"", Check.SIZE, MalformedEvidence),
    ]
    for tampered, check, category in cases:
        error = _check_of(verifier, tampered, exp)
        assert error.check is check, (check, error)
        assert isinstance(error, category)

    # The untouched document still verifies: the cases above failed for their reason.
    verifier.verify(document, kind=DocumentKind.TPM2_QUOTE, expectations=exp, now_ms=NOW_MS)


def test_shared_checks_apply_to_quotes(tpm: TpmDeviceBackend) -> None:
    document = tpm.attest(nonce=NONCE, public_key=BOUND_KEY, user_data=USER_DATA)
    verifier = verifier_for(tpm)
    policy = current_policy(tpm)
    stale = _check_of(verifier, document, expectations(policy, expected_nonce=bytes(32)))
    assert stale.check is Check.NONCE and isinstance(stale, StaleEvidence)
    wrong_key = _check_of(verifier, document, expectations(policy, expected_public_key=bytes(32)))
    assert wrong_key.check is Check.BOUND_KEY
    wrong_data = _check_of(verifier, document, expectations(policy, expected_user_data=b"x"))
    assert wrong_data.check is Check.USER_DATA
    # A quote has no wall clock; an age bound cannot be met and is refused.
    aged = _check_of(verifier, document, expectations(policy, max_age_ms=60_000))
    assert aged.check is Check.FRESHNESS
    no_nonce = tpm.attest(nonce=None, public_key=BOUND_KEY, user_data=USER_DATA)
    missing = _check_of(verifier, no_nonce, expectations(policy))
    assert missing.check is Check.NONCE


def test_pcr_policy_rejects_a_quote_after_an_extend(tpm: TpmDeviceBackend) -> None:
    verifier = verifier_for(tpm)
    policy = current_policy(tpm, "before")
    tpm.pcr_extend(15, sha384(b"unlisted release"))
    document = tpm.attest(nonce=NONCE, public_key=BOUND_KEY, user_data=USER_DATA)
    error = _check_of(verifier, document, expectations(policy))
    assert error.check is Check.PCR_POLICY and isinstance(error, PolicyViolation)


def test_quote_from_an_unpinned_key_is_untrusted(tpm: TpmDeviceBackend) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    verifier = AttestationVerifier(
        [quote.Tpm2QuoteAuthenticator(quote.QuoteTrust.from_ak_public_keys([other]))]
    )
    document = tpm.attest(nonce=NONCE, public_key=BOUND_KEY, user_data=USER_DATA)
    error = _check_of(verifier, document, expectations(None))
    assert error.check is Check.ATTESTATION_KEY and isinstance(error, UntrustedChain)
    # Swapping in the pinned key's SPKI does not help: the signature is the AK's.
    error = _check_of(verifier, reencode(document, ak_public=other), expectations(None))
    assert error.check is Check.SIGNATURE


# --------------------------------------------------------------------------- sealing


def test_seal_unseal_round_trip_and_refusal_after_extend(tpm: TpmDeviceBackend) -> None:
    secret = b"model key-encryption key 32bytes"
    blob = tpm.seal(secret, [14, 16])
    assert secret not in blob
    assert tpm.unseal(blob) == secret
    assert tpm.unseal(blob) == secret
    # An unrelated PCR does not matter ...
    tpm.pcr_extend(13, sha384(b"unrelated"))
    assert tpm.unseal(blob) == secret
    # ... a sealed-to PCR does.
    tpm.pcr_extend(14, sha384(b"a different release"))
    with pytest.raises(TPMError, match="PCR values changed"):
        tpm.unseal(blob)
    # Sealing again under the new values works again.
    assert tpm.unseal(tpm.seal(secret, [14, 16])) == secret


def test_seal_and_unseal_refuse_bad_input(tpm: TpmDeviceBackend) -> None:
    with pytest.raises(TPMError):
        tpm.seal(b"", [16])
    with pytest.raises(TPMError):
        tpm.seal(bytes(129), [16])
    with pytest.raises(TPMError):
        tpm.seal(b"k", [])
    with pytest.raises(TPMError):
        tpm.seal(b"k", [24])
    blob = tpm.seal(b"k", [16])
    for broken in (b"", blob[:-1], blob + b"\x00", b"X" + blob[1:], blob[:12]):
        with pytest.raises(TPMError):
            tpm.unseal(broken)
    # Flip a byte inside the TPM2B_PRIVATE: the TPM's integrity check refuses it.
    corrupt = blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:]
    with pytest.raises(TPMError):
        tpm.unseal(corrupt)


# --------------------------------------------------------------------------- measured HMAC


def test_measured_hmac_is_fixed_by_the_state_and_refused_outside_it(tmp_path: Path) -> None:
    """The same state gives the same tag across restarts and another state
    another; the owner derives the key of a state it is not in, and the TPM
    will not use it."""
    from tpm2_pytss import TSS2_Exception

    from nodes.tpm import TpmDeviceBackend

    selection = (8, 13)
    state = {8: sha384(b"release"), 13: sha384(b"model")}
    instance = Swtpm(tmp_path / "swtpm")
    instance.start()
    try:
        device = TpmDeviceBackend(instance.tcti)
        for index, digest in state.items():
            device.pcr_extend(index, digest)
        measured = device.pcr_read_many(selection)
        tag = device.measured_hmac(selection, b"message")
        assert len(tag) == 32
        assert device.measured_hmac(list(reversed(selection)), b"message") == tag
        assert device.measured_hmac(selection, b"other") != tag
        assert device.measured_hmac((8, 13, 14), b"message") != tag
        device.pcr_extend(14, sha384(b"outside the selection"))
        assert device.measured_hmac(selection, b"message") == tag
        device.close()
        # The owner's HMAC with the key derived for the current state is the
        # node's tag (the owner helper derives the very same key) ...
        assert owner_measured_hmac(instance.tcti, measured, b"message") == tag
        instance.stop()

        instance.start()  # a restart: PCRs at reset, seeds kept
        device = TpmDeviceBackend(instance.tcti)
        assert device.measured_hmac(selection, b"message") != tag
        device.close()
        # ... and the TPM refuses to use that key outside the state.
        with pytest.raises(TSS2_Exception):
            owner_measured_hmac(instance.tcti, measured, b"message")
        device = TpmDeviceBackend(instance.tcti)
        for index, digest in state.items():
            device.pcr_extend(index, digest)
        assert device.measured_hmac(selection, b"message") == tag
        device.close()
    finally:
        instance.stop()


def test_measured_hmac_refuses_bad_input(tpm: TpmDeviceBackend) -> None:
    for selection, message in (((), b"m"), ((24,), b"m"), ((8,), bytes(1025)), ((8,), "m")):
        with pytest.raises(TPMError):
            tpm.measured_hmac(selection, message)  # type: ignore[arg-type]
    assert len(tpm.measured_hmac((8,), bytes(1024))) == 32


# --------------------------------------------------------------------------- counters and restarts


def test_counter_increments_and_survives_a_restart(tmp_path: Path) -> None:
    require_swtpm()
    from nodes.tpm import TpmDeviceBackend

    instance = Swtpm(tmp_path / "state")
    instance.start()
    try:
        with TpmDeviceBackend(instance.tcti) as backend:
            with pytest.raises(CounterMissing):
                backend.counter_read(7)
            name = backend.counter_define(7)
            first = backend.counter_read(7)
            assert first >= 1
            assert backend.counter_increment(7) == first + 1
            assert backend.counter_read(7) == first + 1
            with pytest.raises(CounterMissing):
                backend.counter_read(8)
            ak_before = backend.attestation_key_public()
            blob = backend.seal(b"survives reboot", [16])
        instance.stop()
        instance.start()
        with TpmDeviceBackend(instance.tcti) as backend:
            assert backend.counter_read(7) == first + 1
            assert backend.counter_name(7) == name
            assert backend.counter_increment(7) == first + 2
            # Primary keys come from the TPM's seeds: the same AK (so a pinned
            # AK stays valid) and the same storage key (so blobs still open).
            assert backend.attestation_key_public() == ak_before
            assert backend.unseal(blob) == b"survives reboot"
    finally:
        instance.stop()


def test_counter_refuses_bad_numbers(tpm: TpmDeviceBackend) -> None:
    for counter in (-1, 256):
        with pytest.raises(TPMError):
            tpm.counter_increment(counter)
        with pytest.raises(TPMError):
            tpm.counter_define(counter)


def test_undefined_counter_is_never_zero_and_never_created(tpm: TpmDeviceBackend) -> None:
    for operation in (tpm.counter_read, tpm.counter_name, tpm.counter_increment):
        with pytest.raises(CounterMissing):
            operation(20)
    with pytest.raises(CounterMissing):
        tpm.counter_read(20)  # the increment above created nothing
    name = tpm.counter_define(20)
    assert len(name) == 34 and name[:2] == b"\x00\x0b"  # SHA-256 NV name
    with pytest.raises(TPMError, match="already defined"):
        tpm.counter_define(20)
    assert tpm.counter_name(20) == name


def test_owner_redefined_counter_has_a_new_name_and_starts_above_the_deleted_one(
    swtpm: Swtpm, tpm: TpmDeviceBackend
) -> None:
    from nodes.tpm._device import COUNTER_NV_BASE

    first = tpm.counter_define(21)
    for _ in range(4):
        tpm.counter_increment(21)
    deleted_value = tpm.counter_read(21)
    # A counter defined while that one stands does not inherit its count ...
    tpm.counter_define(22)
    bystander = tpm.counter_read(22)
    owner_undefine(swtpm.tcti, COUNTER_NV_BASE + 21)
    with pytest.raises(CounterMissing):
        tpm.counter_read(21)
    # ... one defined after the deletion starts above it: the TPM rule this
    # backend's counters rest on, as swtpm (libtpms) implements it.
    second = tpm.counter_define(21)
    assert second != first
    assert tpm.counter_read(21) == deleted_value + 1
    assert bystander <= deleted_value


def test_foreign_index_at_a_counter_handle_is_not_a_counter(
    swtpm: Swtpm, tpm: TpmDeviceBackend
) -> None:
    from nodes.tpm._device import COUNTER_NV_BASE

    # A counter the owner defined with tpm2-tools' usual attributes and no policy.
    owner_define_counter(swtpm.tcti, COUNTER_NV_BASE + 23)
    for operation in (tpm.counter_name, tpm.counter_read, tpm.counter_increment):
        with pytest.raises(CounterMismatch):
            operation(23)
    with pytest.raises(TPMError, match="already defined"):
        tpm.counter_define(23)


def test_copied_public_area_gives_the_same_name_but_a_higher_value(
    swtpm: Swtpm, tpm: TpmDeviceBackend
) -> None:
    """The limit of name binding, and why it still holds: the owner can read the
    public area and define it again byte for byte; the TPM then starts the copy
    above the deleted counter, so the value at the handle never goes down."""
    from nodes.tpm._device import COUNTER_NV_BASE

    name = tpm.counter_define(24)
    tpm.counter_increment(24)
    before = tpm.counter_read(24)
    public = read_nv_public(swtpm.tcti, COUNTER_NV_BASE + 24)
    owner_undefine(swtpm.tcti, COUNTER_NV_BASE + 24)
    owner_define_counter(swtpm.tcti, COUNTER_NV_BASE + 24, copy_of=public)
    assert tpm.counter_name(24) == name
    assert tpm.counter_read(24) > before


def test_named_increment_refuses_a_swapped_counter(swtpm: Swtpm, tpm: TpmDeviceBackend) -> None:
    from nodes.tpm._device import COUNTER_NV_BASE

    name = tpm.counter_define(26)
    value = tpm.counter_read(26)
    assert tpm.counter_increment(26, expected_name=name) == value + 1
    with pytest.raises(CounterMismatch):
        tpm.counter_increment(26, expected_name=bytes(34))
    assert tpm.counter_read(26) == value + 1
    # Even a copy of the public area, swapped in, is another index to the TPM
    # until written; the named increment leaves it unwritten.
    public = read_nv_public(swtpm.tcti, COUNTER_NV_BASE + 26)
    owner_undefine(swtpm.tcti, COUNTER_NV_BASE + 26)
    owner_define_counter(swtpm.tcti, COUNTER_NV_BASE + 26, copy_of=public, initialise=False)
    with pytest.raises(CounterMismatch):
        tpm.counter_increment(26, expected_name=name)
    with pytest.raises(TPMError, match="never initialised"):
        tpm.counter_read(26)


def test_tpm_refuses_the_named_increment_of_a_counter_swapped_after_the_check(
    swtpm: Swtpm, tpm: TpmDeviceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window between the backend's name check and TPM2_NV_Increment: the
    owner swaps the counter exactly there; the TPM itself refuses the HMAC."""
    from tpm2_pytss import ESAPI

    from nodes.tpm._device import COUNTER_NV_BASE

    name = tpm.counter_define(27)
    deleted_value = tpm.counter_read(27)
    esapi = tpm._esapi
    assert esapi is not None
    checked_name = esapi.tr_get_name

    def swap_after_the_check(handle: object) -> object:
        cached = checked_name(handle)  # type: ignore[arg-type]
        owner_undefine(swtpm.tcti, COUNTER_NV_BASE + 27)
        owner_define_counter(swtpm.tcti, COUNTER_NV_BASE + 27)
        return cached

    monkeypatch.setattr(esapi, "tr_get_name", swap_after_the_check)
    with pytest.raises(CounterMismatch, match="replaced before the increment"):
        tpm.counter_increment(27, expected_name=name)
    monkeypatch.undo()
    # The impostor holds what its own initialising increment gave it (one above
    # the deleted counter): ours never landed.
    with ESAPI(swtpm.tcti) as owner:
        impostor = owner.tr_from_tpmpublic(COUNTER_NV_BASE + 27)
        assert int.from_bytes(bytes(owner.nv_read(impostor, 8)), "big") == deleted_value + 1


def test_unwritten_counter_is_not_read_as_zero(swtpm: Swtpm, tpm: TpmDeviceBackend) -> None:
    """A definition interrupted before its initialising increment (or an owner's
    unwritten copy) has a name but no value: reading it is an error, not zero."""
    from nodes.tpm._device import COUNTER_NV_BASE

    tpm.counter_define(25)
    public = read_nv_public(swtpm.tcti, COUNTER_NV_BASE + 25)
    written_name = tpm.counter_name(25)
    owner_undefine(swtpm.tcti, COUNTER_NV_BASE + 25)
    owner_define_counter(swtpm.tcti, COUNTER_NV_BASE + 25, copy_of=public, initialise=False)
    assert tpm.counter_name(25) != written_name  # TPMA_NV_WRITTEN is part of the name
    with pytest.raises(TPMError, match="never initialised") as caught:
        tpm.counter_read(25)
    assert not isinstance(caught.value, CounterMissing)


# --------------------------------------------------------------------------- NitroTPM path off EC2


def test_nsm_vendor_command_reaches_the_tpm_and_is_refused_off_ec2(swtpm: Swtpm) -> None:
    from tpm2_pytss import ESAPI

    from nodes.tpm import NsmUnavailable
    from nodes.tpm._nsm import _NSM_NV_FIRST, request_nitrotpm_document

    tpm_rc_command_code = 0x143
    with ESAPI(swtpm.tcti) as esapi:
        # swtpm allows NV indices of 2048 bytes; a NitroTPM takes the 8 KiB default.
        with pytest.raises(NsmUnavailable) as caught:
            request_nitrotpm_document(
                esapi, nonce=NONCE, public_key=BOUND_KEY, user_data=None, buffer_size=2048
            )
        assert caught.value.response_code == tpm_rc_command_code
        # The message buffer was undefined again: the same handle is free.
        from tpm2_pytss import TSS2_Exception

        with pytest.raises(TSS2_Exception):
            esapi.tr_from_tpmpublic(_NSM_NV_FIRST)


def test_nitrotpm_mode_backend_reports_a_tpm_error_off_ec2(swtpm: Swtpm) -> None:
    from nodes.tpm import TpmDeviceBackend

    with (
        TpmDeviceBackend(swtpm.tcti, attestation="nitrotpm") as backend,
        pytest.raises(TPMError, match="NSM"),
    ):
        backend.attest(nonce=NONCE)
