"""Application PCRs: one function for nodes and verifiers, checked against a TPM."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.attestation import PolicyViolation
from protocol.measurement import (
    APPLICATION_PCRS,
    CONFIG_ARTIFACT,
    CONFIG_PCR,
    MODEL_PCR,
    NO_MODEL_DIGEST,
    PCR_RESET_VALUE,
    PLATFORM_PCRS,
    RELEASE_PCR,
    MeasurementError,
    MissingPlatformRegisters,
    ReleaseMeasurement,
    boot_extends,
    cluster_policy,
    current_releases,
    event_digest,
    expected_pcrs,
    model_artifact_name,
    model_policy,
    policy_from_measurements,
    policy_from_releases,
    release_floor,
    release_measurements,
)
from protocol.release import ArtifactSpec, VerifiedRelease
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM

digests = st.binary(min_size=48, max_size=48)
#: Reference values of some node image (PCR 4, 7, 12).
PLATFORM = {index: hashlib.sha384(b"image pcr %d" % index).digest() for index in PLATFORM_PCRS}


def measurement(tag: bytes, model: bytes = b"model") -> ReleaseMeasurement:
    return ReleaseMeasurement(
        hashlib.sha384(b"release" + tag).digest(),
        hashlib.sha384(model).digest(),
        hashlib.sha384(b"config" + tag).digest(),
        PLATFORM,
    )


@given(digests, digests, digests)
def test_expected_pcrs_equal_what_a_tpm_holds_after_boot_extends(
    release: bytes, model: bytes, config: bytes
) -> None:
    tpm = SimulatedNitroTPM.from_seed("measure", clock=ManualClock(0))
    for index, value in boot_extends(ReleaseMeasurement(release, model, config, PLATFORM)):
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
        ReleaseMeasurement(good, bad, good, PLATFORM)  # type: ignore[arg-type]


def test_the_chosen_pcrs_are_static_os_registers() -> None:
    # 8-15: never resettable by software; 16 and 23 are resettable at
    # locality 0 and 17-22 belong to DRTM.
    assert all(8 <= index <= 15 for index in APPLICATION_PCRS)
    assert len(set(APPLICATION_PCRS)) == 3
    assert NO_MODEL_DIGEST != PCR_RESET_VALUE
    # ...and none that an attestable-AMI boot writes: 9 (initrd), 10 (IMA),
    # 11 (UKI sections, boot phases), 12 (UKI command line, AWS's platform
    # register), 15 (machine id, file systems).
    assert not set(APPLICATION_PCRS) & {9, 10, 11, 12, 15}
    assert not set(APPLICATION_PCRS) & set(PLATFORM_PCRS)


def test_genuine_nitrotpm_documents_show_what_a_grub_boot_writes(test_data: Path) -> None:
    # These documents come from instances that booted through GRUB, not from an
    # attestable AMI: PCR 8 (GRUB's command lines) is extended, PCR 11 and 12
    # (a UKI's) are not. Mantle's model and config registers are untouched
    # there too; its release register is GRUB's, so boot would refuse on such
    # an image (the reset check) instead of attesting next to GRUB's values.
    documents = sorted((test_data / "nitro" / "nitrotpm").glob("*.cbor"))
    assert documents
    for path in documents:
        cose = cbor2.loads(path.read_bytes())
        pcrs = cbor2.loads(cose[2])["nitrotpm_pcrs"]
        for index in (MODEL_PCR, CONFIG_PCR, 11, 12):
            assert pcrs[index] == PCR_RESET_VALUE, (path.name, index)
        assert pcrs[RELEASE_PCR] != PCR_RESET_VALUE, path.name


def _attested(m: ReleaseMeasurement) -> dict[int, bytes]:
    return {**m.platform_pcrs, **expected_pcrs(m.release_digest, m.model_digest, m.config_digest)}


def test_policy_accepts_each_release_but_no_mix_of_two() -> None:
    first, second = measurement(b"1"), measurement(b"2", model=b"other model")
    policy = policy_from_measurements({"v1": first, "v2": second})
    a = _attested(first)
    b = _attested(second)
    assert policy.evaluate(a).name == "v1"
    assert policy.evaluate(b).name == "v2"
    mixed = {**a, MODEL_PCR: b[MODEL_PCR]}
    with pytest.raises(PolicyViolation):
        policy.evaluate(mixed)


def test_platform_pcrs_are_pinned_in_every_entry() -> None:
    m = measurement(b"1")
    policy = policy_from_measurements({"v1": m})
    pcrs = dict(expected_pcrs(m.release_digest, m.model_digest, m.config_digest))
    with pytest.raises(PolicyViolation):
        policy.evaluate(pcrs)
    assert policy.evaluate({**pcrs, **PLATFORM}).name == "v1"
    for index in PLATFORM_PCRS:
        with pytest.raises(PolicyViolation):
            policy.evaluate({**pcrs, **PLATFORM, index: hashlib.sha384(b"other").digest()})
    with pytest.raises(MeasurementError):
        ReleaseMeasurement(
            m.release_digest, m.model_digest, m.config_digest, {RELEASE_PCR: bytes(48)}
        )
    with pytest.raises(MissingPlatformRegisters):
        ReleaseMeasurement(m.release_digest, m.model_digest, m.config_digest, {})
    with pytest.raises(MeasurementError):
        policy_from_measurements({})


# --- policies from releases: platform registers and the floor ----------------------------


def _release(version: int, floor: int, *, image: bool = True) -> VerifiedRelease:
    def spec(data: bytes) -> ArtifactSpec:
        return ArtifactSpec(len(data), {"sha384": hashlib.sha384(data).digest()})

    return VerifiedRelease(
        version=version,
        artifacts={CONFIG_ARTIFACT: spec(b"config"), model_artifact_name("m"): spec(b"GGUF")},
        release_digest=hashlib.sha384(b"release %d" % version).digest(),
        expires=datetime(2031, 1, 1, tzinfo=UTC),
        root_version=1,
        root_digest=bytes(48),
        signer_keyids=("k",),
        image_measurements=PLATFORM if image else {},
        min_version=floor,
    )


def test_the_floor_is_the_highest_published_min_version() -> None:
    releases = [_release(1, 0), _release(2, 1), _release(3, 3), _release(4, 2)]
    assert release_floor(releases) == 3
    assert [r.version for r in current_releases(releases)] == [3, 4]
    assert release_floor([]) == 0


def test_policies_leave_out_releases_below_the_floor() -> None:
    releases = [_release(1, 0), _release(2, 2)]
    names = {entry.name for entry in cluster_policy(releases).releases}
    assert names == {"v2", "v2/m"}
    model = model_policy(releases, "m")
    assert model is not None
    assert {entry.name for entry in model.releases} == {"v2/m"}
    # Without the newer release the older one is current again: the floor is
    # what the verifier was told, nothing it guesses.
    assert {entry.name for entry in cluster_policy(releases[:1]).releases} == {"v1", "v1/m"}
    assert model_policy(releases, "unlisted") is None


def test_every_entry_pins_platform_and_application_registers() -> None:
    policy = cluster_policy([_release(1, 0)])
    for entry in policy.releases:
        assert set(dict(entry.pcrs)) == {*PLATFORM_PCRS, *APPLICATION_PCRS}
        for index in PLATFORM_PCRS:
            assert dict(entry.pcrs)[index] == PLATFORM[index]


def test_any_release_without_an_image_refuses_the_whole_policy() -> None:
    releases = [_release(1, 0, image=False), _release(2, 2)]
    with pytest.raises(MissingPlatformRegisters):
        cluster_policy(releases)
    with pytest.raises(MissingPlatformRegisters):
        model_policy(releases, "m")
    with pytest.raises(MissingPlatformRegisters):
        policy_from_releases(releases, release_measurements)
