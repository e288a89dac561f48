"""Measured boot with real TUF metadata, a real log and the simulated NitroTPM.

Every way a release must not run stops the node with a BootError naming the
check, and leaves the TPM untouched (no PCR extended, counter not advanced; a
fresh TPM's counter is defined at step 1 and holds FRESH_COUNTER). The attacks
on the counter itself are in tests/adversarial/.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from _release_kit import CODE_ARTIFACT, NOW, ReleaseFiles, ReleaseKit

from actors.counter_guard import MAX_ADVANCE, CounterBinding, CounterCheck
from actors.seams.tpm import CounterMissing
from nodes.boot import (
    _COUNTER_CHECKS,
    MAX_RELEASE_ADVANCE,
    RELEASE_COUNTER_BINDING,
    BootCheck,
    BootedNode,
    BootError,
    BootInputs,
    measured_boot,
)
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    TrustAnchor,
    noise_key_binding,
)
from protocol.measurement import (
    APPLICATION_PCRS,
    CONFIG_ARTIFACT,
    IMAGE_MEASUREMENTS_ARTIFACT,
    PCR_RESET_VALUE,
    PLATFORM_PCRS,
    RELEASE_COUNTER,
    RELEASE_PCR,
    cluster_policy,
    expected_pcrs_for,
    release_measurement,
)
from simulations.clock import ManualClock
from simulations.nitrotpm import (
    NodeImage,
    SimulatedNitroTPM,
    TpmOp,
    development_image,
)

WEIGHTS = b"GGUF" + bytes(range(256)) * 8
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.fixture
def kit(tmp_path: Path) -> ReleaseKit:
    return ReleaseKit(install_root=tmp_path / "install")


@pytest.fixture
def tpm() -> SimulatedNitroTPM:
    return SimulatedNitroTPM.from_seed("boot-test", clock=ManualClock(NOW_MS))


#: What a fresh TPM's release counter holds once boot has defined it (step 1),
#: before any release advanced it.
FRESH_COUNTER = 1


def inputs(
    kit: ReleaseKit, files: ReleaseFiles, tpm: SimulatedNitroTPM, model_id: str | None = "smol"
) -> BootInputs:
    return kit.boot_inputs(files, model_id, kit.node_state_dir(tpm))


def boot(
    kit: ReleaseKit,
    files: ReleaseFiles,
    tpm: SimulatedNitroTPM,
    *,
    now_offset: timedelta = timedelta(0),
    model_id: str | None = "smol",
) -> BootedNode:
    return measured_boot(
        inputs(kit, files, tpm, model_id), tpm=tpm, random=SystemRandom(), now=NOW + now_offset
    )


def assert_untouched(tpm: SimulatedNitroTPM, counter: int) -> None:
    for index in APPLICATION_PCRS:
        assert tpm.pcr_read(index) == PCR_RESET_VALUE
    assert tpm.counter_read(RELEASE_COUNTER) == counter


def test_boot_measures_release_and_attests_a_document_clients_accept(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    files = kit.publish(3, models={"smol": WEIGHTS})
    booted = boot(kit, files, tpm)

    assert booted.release.version == 3
    assert tpm.counter_read(RELEASE_COUNTER) == 3
    # What a client computes from the release alone is what the TPM holds.
    client_view = release_measurement(kit.verified(files), "smol")
    assert client_view == booted.measurement
    for index, value in expected_pcrs_for(client_view).items():
        assert tpm.pcr_read(index) == value
    assert booted.measurement.model_digest == hashlib.sha384(WEIGHTS).digest()
    assert booted.measurement.config_digest == hashlib.sha384(kit.config).digest()

    verifier = AttestationVerifier([NitroAuthenticator(TrustAnchor.from_der(tpm.pki.root_der))])
    verified = verifier.verify(
        booted.document,
        kind=DocumentKind.NITRO,
        expectations=Expectations(
            pcr_policy=cluster_policy([kit.verified(files)]),
            expected_public_key=noise_key_binding(booted.custody.static_public),
        ),
        now_ms=NOW_MS,
    )
    assert verified.release == "v3/smol"


def test_node_without_model_measures_the_no_model_digest(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    files = kit.publish(1, models={"smol": WEIGHTS})
    booted = boot(kit, files, tpm, model_id=None)
    assert booted.pcrs == expected_pcrs_for(release_measurement(kit.verified(files), None))


@pytest.mark.parametrize("artifact", [CONFIG_ARTIFACT, CODE_ARTIFACT, IMAGE_MEASUREMENTS_ARTIFACT])
def test_tampered_artifact_stops_boot(
    kit: ReleaseKit, tpm: SimulatedNitroTPM, artifact: str
) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS})
    path = kit.install_root / artifact
    data = bytearray(path.read_bytes())
    data[5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.ARTIFACT
    assert artifact in str(caught.value)
    assert "sha384" in str(caught.value)
    assert_untouched(tpm, FRESH_COUNTER)


def test_missing_artifact_stops_boot(kit: ReleaseKit, tpm: SimulatedNitroTPM) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS})
    (kit.install_root / CODE_ARTIFACT).unlink()
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.ARTIFACT
    assert "missing" in str(caught.value)
    assert_untouched(tpm, FRESH_COUNTER)


def test_missing_signature_stops_boot(kit: ReleaseKit, tpm: SimulatedNitroTPM) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS}, signers=kit.signers[:1])
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.SIGNATURES
    assert "1 valid signature(s), threshold is 2" in str(caught.value)
    assert_untouched(tpm, FRESH_COUNTER)


def test_rollback_below_the_tpm_counter_stops_boot(kit: ReleaseKit, tpm: SimulatedNitroTPM) -> None:
    newer = kit.publish(5, models={"smol": WEIGHTS})
    older = kit.publish(4, models={"smol": WEIGHTS})
    boot(kit, newer, tpm)
    assert tpm.counter_read(RELEASE_COUNTER) == 5

    tpm.reboot()
    with pytest.raises(BootError) as caught:
        boot(kit, older, tpm)
    assert caught.value.check is BootCheck.ROLLBACK
    assert "release version 4 is lower than this TPM's release counter 5" in str(caught.value)
    assert_untouched(tpm, 5)

    # The same version boots again; a newer one raises the floor.
    tpm.reboot()
    boot(kit, newer, tpm)
    tpm.reboot()
    boot(kit, kit.publish(7, models={"smol": WEIGHTS}), tpm)
    assert tpm.counter_read(RELEASE_COUNTER) == 7


def test_expired_root_stops_boot(tmp_path: Path, tpm: SimulatedNitroTPM) -> None:
    kit = ReleaseKit(install_root=tmp_path, root_expires=timedelta(days=1))
    files = kit.publish(2, models={"smol": WEIGHTS})
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm, now_offset=timedelta(days=2))
    assert caught.value.check is BootCheck.EXPIRED
    assert "root metadata expired" in str(caught.value)
    assert_untouched(tpm, FRESH_COUNTER)


def test_expired_targets_stop_boot(kit: ReleaseKit, tpm: SimulatedNitroTPM) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS}, expires=NOW + timedelta(days=1))
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm, now_offset=timedelta(days=2))
    assert caught.value.check is BootCheck.EXPIRED
    assert "targets metadata expired" in str(caught.value)
    assert_untouched(tpm, FRESH_COUNTER)


def test_release_missing_from_the_log_stops_boot(kit: ReleaseKit, tpm: SimulatedNitroTPM) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS}, logged=False)
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.NOT_IN_LOG
    assert "not proven in the log" in str(caught.value)
    assert_untouched(tpm, FRESH_COUNTER)


def test_proof_from_another_log_stops_boot(
    kit: ReleaseKit, tmp_path: Path, tpm: SimulatedNitroTPM
) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS})
    other = ReleaseKit(install_root=tmp_path / "other")
    bad = dataclasses.replace(inputs(kit, files, tpm), log_public_key=other.log_public_key)
    with pytest.raises(BootError) as caught:
        measured_boot(bad, tpm=tpm, random=SystemRandom(), now=NOW)
    assert caught.value.check is BootCheck.NOT_IN_LOG
    assert_untouched(tpm, FRESH_COUNTER)


def test_root_not_chained_to_the_pin_stops_boot(
    kit: ReleaseKit, tmp_path: Path, tpm: SimulatedNitroTPM
) -> None:
    impostor = ReleaseKit(install_root=kit.install_root)
    files = impostor.publish(2, models={"smol": WEIGHTS})
    bad = dataclasses.replace(inputs(kit, files, tpm), log_public_key=impostor.log_public_key)
    with pytest.raises(BootError) as caught:
        measured_boot(bad, tpm=tpm, random=SystemRandom(), now=NOW)
    assert caught.value.check is BootCheck.UNTRUSTED_ROOT
    assert_untouched(tpm, FRESH_COUNTER)


def test_model_the_release_does_not_list_stops_boot(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS})
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm, model_id="other-model")
    assert caught.value.check is BootCheck.MODEL_NOT_IN_RELEASE
    assert_untouched(tpm, FRESH_COUNTER)


def test_second_boot_without_reboot_is_refused(kit: ReleaseKit, tpm: SimulatedNitroTPM) -> None:
    files = kit.publish(1, models={"smol": WEIGHTS})
    boot(kit, files, tpm)
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.PCR_STATE
    assert f"PCR {RELEASE_PCR} is not at its reset value" in str(caught.value)


def test_tpm_failure_during_measurement_stops_boot(kit: ReleaseKit, tpm: SimulatedNitroTPM) -> None:
    files = kit.publish(1, models={"smol": WEIGHTS})
    tpm.inject_failure(TpmOp.PCR_EXTEND)
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.TPM


class _CounterRaisedAfterFirstRead:
    """A TPM whose release counter another start raises right after boot's first read."""

    def __init__(self, tpm: SimulatedNitroTPM, raise_to: int) -> None:
        self._tpm = tpm
        self._raise_to = raise_to
        self._reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._tpm, name)

    def counter_read(self, counter: int) -> int:
        value = self._tpm.counter_read(counter)
        self._reads += 1
        if self._reads == 1:
            while self._tpm.counter_read(counter) < self._raise_to:
                self._tpm.counter_increment(counter)
        return value


def test_counter_raised_during_verification_stops_boot(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS})
    racing = _CounterRaisedAfterFirstRead(tpm, raise_to=3)
    with pytest.raises(BootError) as caught:
        measured_boot(
            inputs(kit, files, tpm),
            tpm=racing,  # type: ignore[arg-type]
            random=SystemRandom(),
            now=NOW,
        )
    assert caught.value.check is BootCheck.ROLLBACK
    assert "release version 2 is lower than this TPM's release counter 3" in str(caught.value)
    assert_untouched(tpm, 3)


def test_malformed_log_proof_stops_boot_as_not_in_log(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS})
    bad = ReleaseFiles(files.root, files.targets, b"{not json", files.version)
    with pytest.raises(BootError) as caught:
        boot(kit, bad, tpm)
    assert caught.value.check is BootCheck.NOT_IN_LOG
    assert "log proof is malformed" in str(caught.value)
    assert_untouched(tpm, FRESH_COUNTER)


def test_first_boot_defines_the_counter_and_keeps_its_binding(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    state = kit.node_state_dir(tpm)
    with pytest.raises(CounterMissing):
        tpm.counter_read(RELEASE_COUNTER)
    boot(kit, kit.publish(2, models={"smol": WEIGHTS}), tpm)
    stored = CounterBinding.decode((state / RELEASE_COUNTER_BINDING).read_bytes())
    assert stored == CounterBinding(RELEASE_COUNTER, tpm.counter_name(RELEASE_COUNTER))
    assert sorted(path.name for path in state.iterdir()) == [RELEASE_COUNTER_BINDING]
    # Later boots use it and leave it as it is.
    tpm.reboot()
    boot(kit, kit.publish(3, models={"smol": WEIGHTS}), tpm)
    assert (state / RELEASE_COUNTER_BINDING).read_bytes() == stored.encode()


def test_unusable_state_directory_stops_boot(
    kit: ReleaseKit, tpm: SimulatedNitroTPM, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "state-is-a-file"
    not_a_directory.write_bytes(b"")
    files = kit.publish(2, models={"smol": WEIGHTS})
    bad = dataclasses.replace(inputs(kit, files, tpm), state_dir=not_a_directory)
    with pytest.raises(BootError) as caught:
        measured_boot(bad, tpm=tpm, random=SystemRandom(), now=NOW)
    assert caught.value.check is BootCheck.STATE_DIR
    assert "errno" in str(caught.value)
    # Refused before the TPM was asked anything.
    with pytest.raises(CounterMissing):
        tpm.counter_read(RELEASE_COUNTER)


def test_binding_that_cannot_be_written_stops_boot(kit: ReleaseKit, tpm: SimulatedNitroTPM) -> None:
    state = kit.node_state_dir(tpm)
    # Where the atomic write puts its temporary file, something is in the way.
    (state / f".{RELEASE_COUNTER_BINDING}.tmp").mkdir(parents=True)
    files = kit.publish(2, models={"smol": WEIGHTS})
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.STATE_DIR
    assert_untouched(tpm, FRESH_COUNTER)
    # The counter was defined before its binding could be written, so the next
    # boot finds a counter without a binding and refuses; the recovery is the
    # owner deleting the counter (a fresh start; see actors.counter_guard).
    (state / f".{RELEASE_COUNTER_BINDING}.tmp").rmdir()
    with pytest.raises(BootError) as again:
        boot(kit, files, tpm)
    assert again.value.check is BootCheck.COUNTER_BINDING_MISSING
    tpm.owner_undefine_counter(RELEASE_COUNTER)
    boot(kit, files, tpm)
    assert tpm.counter_read(RELEASE_COUNTER) == 2


def test_tpm_failure_opening_the_counter_stops_boot(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS})
    tpm.inject_failure(TpmOp.COUNTER_DEFINE)
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.TPM
    assert not (kit.node_state_dir(tpm) / RELEASE_COUNTER_BINDING).exists()
    boot(kit, files, tpm)  # nothing was left half-done
    assert tpm.counter_read(RELEASE_COUNTER) == 2


def test_every_counter_refusal_has_a_boot_check() -> None:
    assert set(_COUNTER_CHECKS) == set(CounterCheck)
    assert MAX_RELEASE_ADVANCE <= MAX_ADVANCE


# --- the node image and the running code ------------------------------------------------


def test_boot_checks_the_platform_registers_against_the_release(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS})
    booted = boot(kit, files, tpm)
    for index in PLATFORM_PCRS:
        assert tpm.pcr_read(index) == booted.release.image_measurements[index]
    assert booted.measurement.platform_pcrs == booted.release.image_measurements


def test_machine_booted_from_another_image_stops_boot(kit: ReleaseKit) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS})
    released = kit.image
    for machine, image in enumerate(
        (
            development_image(b"another tree"),
            NodeImage(
                released.uki_digest, hashlib.sha384(b"sb").digest(), released.command_line_digest
            ),
        )
    ):
        tpm = SimulatedNitroTPM.from_seed(
            f"other-image-{machine}", clock=ManualClock(NOW_MS), image=image
        )
        with pytest.raises(BootError) as caught:
            boot(kit, files, tpm)
        assert caught.value.check is BootCheck.PLATFORM_PCRS
        assert "did not boot the image" in str(caught.value)
        assert_untouched(tpm, FRESH_COUNTER)


def test_release_naming_no_image_stops_boot(kit: ReleaseKit, tpm: SimulatedNitroTPM) -> None:
    files = kit.publish(2, models={"smol": WEIGHTS}, with_image=False)
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.IMAGE
    assert "names no node image" in str(caught.value)
    assert_untouched(tpm, FRESH_COUNTER)


def test_installed_image_file_that_disagrees_with_the_signed_values_stops_boot(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    def other_signed_values(targets_md: object) -> None:
        entry = targets_md.signed.targets[IMAGE_MEASUREMENTS_ARTIFACT]  # type: ignore[attr-defined]
        entry.unrecognized_fields["custom"]["Measurements"]["PCR7"] = "00" * 48

    files = kit.publish(2, models={"smol": WEIGHTS}, mutate=other_signed_values)
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.IMAGE
    assert "differ from the values" in str(caught.value)
    assert_untouched(tpm, FRESH_COUNTER)


def test_release_without_a_source_manifest_stops_boot(
    kit: ReleaseKit, tpm: SimulatedNitroTPM
) -> None:
    def drop_manifest(targets_md: object) -> None:
        del targets_md.signed.targets[CODE_ARTIFACT]  # type: ignore[attr-defined]

    files = kit.publish(2, models={"smol": WEIGHTS}, mutate=drop_manifest)
    with pytest.raises(BootError) as caught:
        boot(kit, files, tpm)
    assert caught.value.check is BootCheck.SOURCE_TREE
    assert_untouched(tpm, FRESH_COUNTER)
