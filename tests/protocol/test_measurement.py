"""Application PCRs: one function for nodes and verifiers, checked against a TPM."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.attestation import PolicyViolation
from protocol.measurement import (
    APPLICATION_PCRS,
    CONFIG_PCR,
    MODEL_PCR,
    NO_MODEL_DIGEST,
    PCR_RESET_VALUE,
    RELEASE_PCR,
    MeasurementError,
    ReleaseMeasurement,
    boot_extends,
    event_digest,
    expected_pcrs,
    policy_from_releases,
)
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM

digests = st.binary(min_size=48, max_size=48)


def measurement(tag: bytes, model: bytes = b"model") -> ReleaseMeasurement:
    return ReleaseMeasurement(
        hashlib.sha384(b"release" + tag).digest(),
        hashlib.sha384(model).digest(),
        hashlib.sha384(b"config" + tag).digest(),
    )


@given(digests, digests, digests)
def test_expected_pcrs_equal_what_a_tpm_holds_after_boot_extends(
    release: bytes, model: bytes, config: bytes
) -> None:
    tpm = SimulatedNitroTPM.from_seed("measure", clock=ManualClock(0))
    for index, value in boot_extends(ReleaseMeasurement(release, model, config)):
        tpm.pcr_extend(index, value)
    expected = expected_pcrs(release, model, config)
    assert set(expected) == set(APPLICATION_PCRS)
    for index in APPLICATION_PCRS:
        assert tpm.pcr_read(index) == expected[index]


@given(digests, digests, digests, digests)
def test_each_pcr_depends_only_on_its_own_digest(
    release: bytes, model: bytes, config: bytes, other: bytes
) -> None:
    base = expected_pcrs(release, model, config)
    changed = expected_pcrs(other, model, config)
    assert (changed[RELEASE_PCR] == base[RELEASE_PCR]) == (other == release)
    assert changed[MODEL_PCR] == base[MODEL_PCR]
    assert changed[CONFIG_PCR] == base[CONFIG_PCR]


def test_events_are_domain_separated_per_register() -> None:
    digest = hashlib.sha384(b"x").digest()
    events = {event_digest(index, digest) for index in APPLICATION_PCRS}
    assert len(events) == 3
    assert digest not in events
    with pytest.raises(MeasurementError):
        event_digest(16, digest)


@pytest.mark.parametrize("bad", [b"", bytes(32), bytes(49), "x" * 48])
def test_digests_must_be_sha384(bad: object) -> None:
    good = bytes(48)
    with pytest.raises(MeasurementError):
        expected_pcrs(bad, good, good)  # type: ignore[arg-type]
    with pytest.raises(MeasurementError):
        ReleaseMeasurement(good, bad, good)  # type: ignore[arg-type]


def test_the_chosen_pcrs_are_static_os_registers() -> None:
    # 8-15: never resettable by software; 16 and 23 are resettable at
    # locality 0 and 17-22 belong to DRTM.
    assert all(8 <= index <= 15 for index in APPLICATION_PCRS)
    assert len(set(APPLICATION_PCRS)) == 3
    assert NO_MODEL_DIGEST != PCR_RESET_VALUE


def test_genuine_nitrotpm_documents_leave_the_chosen_pcrs_at_reset(test_data: Path) -> None:
    documents = sorted((test_data / "nitro" / "nitrotpm").glob("*.cbor"))
    assert documents
    for path in documents:
        cose = cbor2.loads(path.read_bytes())
        pcrs = cbor2.loads(cose[2])["nitrotpm_pcrs"]
        for index in APPLICATION_PCRS:
            assert pcrs[index] == PCR_RESET_VALUE, (path.name, index)


def test_policy_accepts_each_release_but_no_mix_of_two() -> None:
    first, second = measurement(b"1"), measurement(b"2", model=b"other model")
    policy = policy_from_releases({"v1": first, "v2": second})
    a = expected_pcrs(first.release_digest, first.model_digest, first.config_digest)
    b = expected_pcrs(second.release_digest, second.model_digest, second.config_digest)
    assert policy.evaluate(a).name == "v1"
    assert policy.evaluate(b).name == "v2"
    mixed = {RELEASE_PCR: a[RELEASE_PCR], MODEL_PCR: b[MODEL_PCR], CONFIG_PCR: a[CONFIG_PCR]}
    with pytest.raises(PolicyViolation):
        policy.evaluate(mixed)


def test_platform_pcrs_are_pinned_in_every_entry() -> None:
    boot_chain = {4: hashlib.sha384(b"attestable ami").digest()}
    m = measurement(b"1")
    policy = policy_from_releases({"v1": m}, platform_pcrs=boot_chain)
    pcrs = dict(expected_pcrs(m.release_digest, m.model_digest, m.config_digest))
    with pytest.raises(PolicyViolation):
        policy.evaluate(pcrs)
    assert policy.evaluate({**pcrs, **boot_chain}).name == "v1"
    with pytest.raises(MeasurementError):
        policy_from_releases({"v1": m}, platform_pcrs={RELEASE_PCR: bytes(48)})
    with pytest.raises(MeasurementError):
        policy_from_releases({})
