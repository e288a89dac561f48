"""SimulatedNitroTPM: PCR bank, documents, sealing, counters, faults, determinism."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.seams.tpm import TPM, CounterMissing, TPMError
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    TrustAnchor,
    noise_key_binding,
)
from protocol.measurement import pcr_extend_value
from simulations.clock import ManualClock
from simulations.nitrotpm import (
    FIRMWARE_MEASUREMENT,
    NvState,
    SimulatedNitroPKI,
    SimulatedNitroTPM,
    TpmOp,
    firmware_pcrs,
    reset_value,
)
from simulations.nitrotpm._tpm import COUNTER_COUNT

T0 = 1_760_000_000_000


def _tpm(seed: object = "seed", **kwargs: object) -> SimulatedNitroTPM:
    return SimulatedNitroTPM.from_seed(seed, clock=ManualClock(T0), **kwargs)  # type: ignore[arg-type]


def test_satisfies_the_tpm_seam() -> None:
    tpm: TPM = _tpm()
    assert len(tpm.random_bytes(8)) == 8


def test_pcr_bank_has_real_reset_values_and_a_measured_firmware() -> None:
    tpm = _tpm()
    zero, ones = bytes(48), b"\xff" * 48
    assert tpm.pcr_read(0) == hashlib.sha384(zero + FIRMWARE_MEASUREMENT).digest()
    # The firmware measured the node image into 1-7 and 12 (the boot chain).
    booted = firmware_pcrs(tpm.image)
    for index in (*range(1, 8), 12):
        assert tpm.pcr_read(index) == booted[index] != reset_value(index)
    for index in (*range(8, 12), *range(13, 24)):
        expected = ones if 17 <= index <= 22 else zero
        assert tpm.pcr_read(index) == expected == reset_value(index)


@given(st.lists(st.binary(min_size=48, max_size=48), max_size=5), st.integers(0, 23))
@settings(max_examples=50)
def test_extend_is_sha384_of_old_and_digest(digests: list[bytes], index: int) -> None:
    tpm = _tpm()
    expected = tpm.pcr_read(index)
    for digest in digests:
        tpm.pcr_extend(index, digest)
        expected = hashlib.sha384(expected + digest).digest()
    assert tpm.pcr_read(index) == expected


def test_extend_validates_index_and_digest() -> None:
    tpm = _tpm()
    for index, digest in ((24, bytes(48)), (-1, bytes(48)), (3, bytes(32)), (3, bytes(49))):
        with pytest.raises(TPMError):
            tpm.pcr_extend(index, digest)


def test_locked_pcr_refuses_extend_until_reboot() -> None:
    tpm = _tpm()
    tpm.pcr_extend(8, b"\x01" * 48)
    tpm.pcr_lock(8)
    assert tpm.pcr_locked(8)
    value = tpm.pcr_read(8)
    with pytest.raises(TPMError):
        tpm.pcr_extend(8, b"\x02" * 48)
    assert tpm.pcr_read(8) == value
    tpm.reboot()
    assert not tpm.pcr_locked(8)
    assert tpm.pcr_read(8) == bytes(48)
    tpm.pcr_extend(8, b"\x02" * 48)


def test_sealed_data_fails_to_unseal_after_a_pcr_extend() -> None:
    tpm = _tpm()
    tpm.pcr_extend(11, b"\x05" * 48)
    blob = tpm.seal(b"model key-encryption key", [0, 11])
    assert tpm.unseal(blob) == b"model key-encryption key"
    tpm.pcr_extend(12, b"\x06" * 48)  # not bound: still opens
    assert tpm.unseal(blob) == b"model key-encryption key"
    tpm.pcr_extend(11, b"\x07" * 48)
    with pytest.raises(TPMError):
        tpm.unseal(blob)


def test_sealed_data_fails_after_reboot_unless_pcrs_are_remeasured() -> None:
    tpm = _tpm()
    tpm.pcr_extend(11, b"\x05" * 48)
    blob = tpm.seal(b"secret", [11])
    tpm.reboot()
    with pytest.raises(TPMError):
        tpm.unseal(blob)
    tpm.pcr_extend(11, b"\x05" * 48)  # the same release measured again
    assert tpm.unseal(blob) == b"secret"


def test_sealed_data_is_bound_to_its_tpm_and_tamper_evident() -> None:
    blob = _tpm("a").seal(b"secret", [0])
    with pytest.raises(TPMError):
        _tpm("b").unseal(blob)
    tpm = _tpm("a")
    for position in (0, 3, 10, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(TPMError):
            tpm.unseal(bytes(tampered))
    with pytest.raises(TPMError):
        tpm.unseal(b"short")


def test_the_owner_seals_to_values_the_machine_is_not_in() -> None:
    # What a TPM owner can do on any TPM: a blob for a state the machine is not in...
    tpm = _tpm("a")
    digest = hashlib.sha384(b"a release").digest()
    target = {0: tpm.pcr_read(0), 11: pcr_extend_value(tpm.pcr_read(11), digest)}
    blob = tpm.owner_seal_to(b"owner's secret", target)
    with pytest.raises(TPMError):
        tpm.unseal(blob)
    # ...that opens once the machine gets there.
    tpm.pcr_extend(11, digest)
    assert tpm.unseal(blob) == b"owner's secret"
    with pytest.raises(TPMError):
        tpm.owner_seal_to(b"x", {11: b"short"})


def test_measured_hmac_is_keyed_by_the_tpm_and_the_selected_registers_now() -> None:
    release = hashlib.sha384(b"a release").digest()

    def booted(seed: str) -> SimulatedNitroTPM:
        tpm = _tpm(seed)
        tpm.pcr_extend(8, release)
        return tpm

    tpm = booted("a")
    tag = tpm.measured_hmac([4, 8], b"message")
    assert len(tag) == 32
    assert tpm.measured_hmac([8, 4], b"message") == tag  # a selection, not a sequence
    assert booted("a").measured_hmac([4, 8], b"message") == tag  # across restarts
    assert booted("b").measured_hmac([4, 8], b"message") != tag  # another TPM
    assert tpm.measured_hmac([4, 8], b"other") != tag
    assert tpm.measured_hmac([4, 8, 9], b"message") != tag  # another selection
    tpm.pcr_extend(9, b"\x01" * 48)  # outside the selection
    assert tpm.measured_hmac([4, 8], b"message") == tag
    tpm.pcr_extend(8, b"\x01" * 48)  # inside it: another state, another key
    assert tpm.measured_hmac([4, 8], b"message") != tag
    tpm.reboot()  # at reset: not the state either...
    assert tpm.measured_hmac([4, 8], b"message") != tag
    tpm.pcr_extend(8, release)  # ...until the same release is measured again
    assert tpm.measured_hmac([4, 8], b"message") == tag
    with pytest.raises(TPMError):
        tpm.measured_hmac([], b"message")
    with pytest.raises(TPMError):
        tpm.measured_hmac([24], b"message")
    with pytest.raises(TPMError):
        tpm.measured_hmac([4], bytes(1025))
    assert len(tpm.measured_hmac([4], bytes(1024))) == 32
    tpm.inject_failure(TpmOp.MEASURED_HMAC)
    with pytest.raises(TPMError):
        tpm.measured_hmac([4], b"message")


def test_seal_nonces_do_not_repeat_when_nv_state_starts_over() -> None:
    # Same seed, fresh NvState each time: the RNG position repeats, the nonce must not.
    first = _tpm("same").seal(b"first secret", [0])
    second = _tpm("same").seal(b"other secret", [0])
    nonce = slice(5, 17)  # after the version byte and the PCR selection
    assert first[nonce] != second[nonce]
    assert _tpm("same").seal(b"first secret", [0]) == first  # still deterministic


def test_counters_are_monotonic_and_survive_reboot_and_restart() -> None:
    tpm = _tpm()
    with pytest.raises(CounterMissing):
        tpm.counter_read(3)
    name = tpm.counter_define(3)
    # A fresh TPM's first counter starts at one, then goes up by one.
    assert tpm.counter_read(3) == 1
    assert [tpm.counter_increment(3) for _ in range(3)] == [2, 3, 4]
    tpm.reboot()
    assert tpm.counter_read(3) == 4
    assert tpm.counter_name(3) == name
    restarted = _tpm(nv=tpm.nv)
    assert restarted.counter_increment(3) == 5
    assert restarted.counter_name(3) == name
    with pytest.raises(CounterMissing):
        restarted.counter_read(0)
    with pytest.raises(TPMError):
        tpm.counter_read(99)


def test_undefined_counters_are_never_read_as_zero_nor_created() -> None:
    tpm = _tpm()
    for operation in (tpm.counter_read, tpm.counter_name, tpm.counter_increment):
        with pytest.raises(CounterMissing):
            operation(5)
    assert 5 not in tpm.nv.counters
    tpm.counter_define(5)
    with pytest.raises(TPMError, match="already defined"):
        tpm.counter_define(5)
    with pytest.raises(TPMError):
        tpm.counter_define(COUNTER_COUNT)


def test_a_redefined_counter_has_a_new_name_and_starts_above_the_deleted_one() -> None:
    tpm = _tpm()
    first = tpm.counter_define(2)
    for _ in range(6):
        tpm.counter_increment(2)
    assert tpm.counter_read(2) == 7
    # A counter defined while another stands does not inherit its count (as on swtpm).
    tpm.counter_define(9)
    assert tpm.counter_read(9) == 1
    tpm.owner_undefine_counter(2)
    with pytest.raises(CounterMissing):
        tpm.counter_read(2)
    with pytest.raises(CounterMissing):
        tpm.owner_undefine_counter(2)
    # As TPM2_NV_Increment initialises an unwritten counter: from the TPM's
    # high-water mark, which deleting the counter at 7 raised.
    second = tpm.counter_define(2)
    assert second != first
    assert len(second) == len(first) == 34 and second[:2] == b"\x00\x0b"
    assert tpm.counter_read(2) == 8
    # The mark is non-volatile and shared: a restarted TPM on the same NV state
    # starts any counter defined after a deletion above every deleted count.
    restarted = _tpm(nv=tpm.nv)
    restarted.owner_undefine_counter(9)
    restarted.counter_define(9)
    assert restarted.counter_read(9) == 8


def test_random_bytes_are_deterministic_and_never_repeat_across_reboot() -> None:
    first, second = _tpm(), _tpm()
    assert first.random_bytes(32) == second.random_bytes(32)
    a = first.random_bytes(32)
    first.reboot()
    assert first.random_bytes(32) != a
    assert _tpm("other").random_bytes(32) != _tpm().random_bytes(32)
    with pytest.raises(TPMError):
        first.random_bytes(10**6)


def test_injected_failures_and_delays() -> None:
    slept: list[float] = []
    clock = ManualClock(T0)

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    tpm = SimulatedNitroTPM(seed=1, pki=SimulatedNitroPKI(1), clock=clock, sleep=sleep)
    tpm.inject_failure(TpmOp.ATTEST, times=2)
    for _ in range(2):
        with pytest.raises(TPMError):
            tpm.attest()
    tpm.attest()
    tpm.inject_delay(TpmOp.ATTEST, 1.5)
    document = tpm.attest()
    assert slept == [1.5]
    payload = cbor2.loads(cbor2.loads(document)[2])
    assert payload["timestamp"] == T0 + 1500
    tpm.inject_failure(TpmOp.UNSEAL)
    blob = tpm.seal(b"x", [])
    with pytest.raises(TPMError):
        tpm.unseal(blob)
    assert tpm.unseal(blob) == b"x"
    with pytest.raises(ValueError):
        _tpm().inject_delay(TpmOp.ATTEST, 1.0)


def test_documents_have_nitrotpm_form() -> None:
    tpm = _tpm()
    document = tpm.attest(nonce=b"n" * 16, public_key=noise_key_binding(b"k" * 32))
    outer = cbor2.loads(document)
    assert document[0] == 0x84  # untagged 4-element array
    protected, unprotected, payload_bytes, signature = outer
    assert protected == b"\xa1\x01\x38\x22" and unprotected == {} and len(signature) == 96
    assert payload_bytes[0] == 0xBF and payload_bytes[-1] == 0xFF  # indefinite-length map
    payload = cbor2.loads(payload_bytes)
    assert list(payload) == [
        "module_id", "digest", "timestamp", "nitrotpm_pcrs", "certificate", "cabundle",
        "public_key", "user_data", "nonce",
    ]  # fmt: skip
    assert payload["digest"] == "SHA384" and payload["timestamp"] == T0
    assert sorted(payload["nitrotpm_pcrs"]) == list(range(24))
    assert payload["user_data"] is None and payload["nonce"] == b"n" * 16
    assert len(payload["cabundle"]) == 4 and payload["cabundle"][0] == tpm.pki.root_der
    # Simulated documents say so.
    assert payload["module_id"].startswith("sim-")
    root = x509.load_der_x509_certificate(payload["cabundle"][0])
    assert "SIMULATED" in root.subject.rfc4514_string()
    verifier = AttestationVerifier([NitroAuthenticator(TrustAnchor(tpm.pki.root_der))])
    verified = verifier.verify(
        document, kind=DocumentKind.NITRO, expectations=Expectations(None), now_ms=T0
    )
    assert not verified.debug_mode


def test_attest_enforces_aws_size_limits() -> None:
    tpm = _tpm()
    tpm.attest(nonce=b"\x00" * 1024, public_key=b"\x00" * 1024, user_data=b"\x00" * 1024)
    for name in ("nonce", "public_key", "user_data"):
        with pytest.raises(TPMError):
            tpm.attest(**{name: b"\x00" * 1025})


def test_same_seed_and_time_reproduce_the_same_bytes() -> None:
    a = _tpm(42).attest(nonce=b"x", user_data=b"y")
    b = _tpm(42).attest(nonce=b"x", user_data=b"y")
    assert a == b
    assert _tpm(43).attest(nonce=b"x", user_data=b"y") != a
    assert SimulatedNitroPKI(42).root_pem() == SimulatedNitroPKI("42").root_pem()


def test_one_pki_serves_many_tpms_under_one_root() -> None:
    pki = SimulatedNitroPKI("cluster")
    verifier = AttestationVerifier([NitroAuthenticator(TrustAnchor(pki.root_der))])
    module_ids = set()
    for node in range(3):
        tpm = SimulatedNitroTPM(seed=f"node-{node}", pki=pki, clock=ManualClock(T0))
        verified = verifier.verify(
            tpm.attest(), kind=DocumentKind.NITRO, expectations=Expectations(None), now_ms=T0
        )
        module_ids.add(verified.module_id)
    assert len(module_ids) == 3


@pytest.mark.parametrize("hours", [0, 1, 5, 30, 24 * 7, 24 * 45])
def test_chain_is_valid_whenever_a_document_is_made(hours: int) -> None:
    now = T0 + hours * 3_600_000 + 1234
    tpm = SimulatedNitroTPM.from_seed("long-run", clock=ManualClock(now))
    verifier = AttestationVerifier([NitroAuthenticator(TrustAnchor(tpm.pki.root_der))])
    verifier.verify(
        tpm.attest(), kind=DocumentKind.NITRO, expectations=Expectations(None), now_ms=now
    )
    # ...and stays valid for the next 2 h 59 min (the signing certificate's remaining life
    # is at least two hours, as with AWS).
    verifier.verify(
        tpm.attest(),
        kind=DocumentKind.NITRO,
        expectations=Expectations(None),
        now_ms=now + 7_000_000,
    )


def test_nv_state_default_is_fresh() -> None:
    fresh = NvState()
    assert fresh.counters == {}
    assert fresh.highest_count == 0
