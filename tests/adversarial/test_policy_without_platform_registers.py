"""Attack: get a policy built that does not pin the node image.

Before the fix every policy builder took ``platform_pcrs=None`` by default and
no caller passed it, so every key and client policy accepted any image. Now
the platform registers come from each release, a release that names no image
makes every policy builder raise :class:`MissingPlatformRegisters`, there is
no parameter to leave them out, and a node booting such a release stops.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseKit

from actors.key_custody import Denial, KeyReleaseDenied, KeyVault, NodeKeyCustody
from nodes.boot import BootCheck, BootError, measured_boot
from nodes.random import SystemRandom
from protocol import measurement
from protocol.attestation import AttestationVerifier, NitroAuthenticator, TrustAnchor
from protocol.measurement import (
    PLATFORM_PCRS,
    MeasurementError,
    MissingPlatformRegisters,
    boot_extends,
    cluster_policy,
    model_policy,
    release_measurement,
)
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

NOW_MS = int(NOW.timestamp() * 1000)
MODEL = "smol"
WEIGHTS = b"GGUF" + hashlib.shake_256(b"weights").digest(4096)


def test_no_policy_for_a_release_that_names_no_image(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    imageless = kit.verified(kit.publish(1, models={MODEL: WEIGHTS}, with_image=False))
    pinned = kit.verified(kit.publish(2, models={MODEL: WEIGHTS}))
    assert not imageless.image_measurements
    assert set(pinned.image_measurements) == set(PLATFORM_PCRS)

    for releases in ([imageless], [pinned, imageless]):
        with pytest.raises(MissingPlatformRegisters):
            model_policy(releases, MODEL)
        with pytest.raises(MissingPlatformRegisters):
            cluster_policy(releases)
        with pytest.raises(MissingPlatformRegisters):
            release_measurement(imageless, MODEL)
    assert issubclass(MissingPlatformRegisters, MeasurementError)

    # No builder has a way to leave the platform registers out.
    for builder in (
        measurement.model_policy,
        measurement.cluster_policy,
        measurement.policy_from_releases,
        measurement.policy_from_measurements,
    ):
        assert "platform_pcrs" not in inspect.signature(builder).parameters


def test_keys_node_and_boot_refuse_a_release_without_an_image(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    files = kit.publish(1, models={MODEL: WEIGHTS}, with_image=False)
    release = kit.verified(files)
    pki = SimulatedNitroPKI("cloud")
    wall = ManualClock(NOW_MS)

    # A node on that release does not boot ...
    node_tpm = SimulatedNitroTPM(seed="node", pki=pki, clock=wall)
    with pytest.raises(BootError) as stopped:
        measured_boot(
            kit.boot_inputs(files, MODEL, kit.node_state_dir(node_tpm)),
            tpm=node_tpm,
            random=SystemRandom(),
            now=NOW,
        )
    assert stopped.value.check is BootCheck.IMAGE

    # ... and a keys node configured with it releases nothing, even to a
    # machine whose application registers hold the release's values.
    keys_tpm = SimulatedNitroTPM(seed="keys", pki=pki, clock=wall)
    vault = KeyVault(
        custody=NodeKeyCustody(random=SystemRandom()),  # no release boots: a bare key
        tpm=keys_tpm,
        random=SystemRandom(),
        clock=wall,
        verifier=AttestationVerifier([NitroAuthenticator(TrustAnchor.from_der(pki.root_der))]),
        policy_for=lambda model_id: model_policy([release], model_id),
        keyring=KeyVault.new_keyring(keys_tpm, SystemRandom()),
        # No release names a provider key here: the tests add keys directly.
        provider_static_for=lambda model_id: None,
        persist=lambda keyring_file: None,
    )
    vault.add_data_key(MODEL, SystemRandom().token_bytes(32))
    replay = SimulatedNitroTPM(seed="replay", pki=pki, clock=wall)
    for index, digest in boot_extends(
        measurement.ReleaseMeasurement(
            release.release_digest,
            release.artifacts[measurement.model_artifact_name(MODEL)].hashes["sha384"],
            release.artifacts[measurement.CONFIG_ARTIFACT].hashes["sha384"],
            {index: replay.pcr_read(index) for index in PLATFORM_PCRS},
        )
    ):
        replay.pcr_extend(index, digest)
    custody = NodeKeyCustody(random=SystemRandom())
    request = custody.data_key_request(
        replay, challenge=vault.issue_challenge(custody.static_public), model_id=MODEL
    )
    with pytest.raises(KeyReleaseDenied) as denied:
        vault.release_data_key(request, peer=request.static_public)
    assert denied.value.denial is Denial.UNMEASURED_POLICY
    assert not custody.has_data_key(MODEL, 1)
