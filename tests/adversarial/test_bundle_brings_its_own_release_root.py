"""Attack: hand the demo's client a release bundle signed by the attacker's own root.

Before the fix the demo's client took its pins from the bundle it verified
(``pinned_root = published.root``, the log key from the same object): a bundle
carrying its own root, signed by its own keys and "logged" in its own log,
verified. Now the client loads the attestation root, the release root and the
log key from the pins directory the release signers and the cloud wrote, and
the bundle only carries what it is checked against them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mantle import client_release_view, load_pins
from mantle.trust_state import TrustStateFile
from nodes.devcluster import ClusterLayout, build_dev_release
from nodes.random import SystemRandom
from nodes.release import KeyFileError, ReleaseDirectory, artifact_spec_of
from protocol.noise import KeyPair, NoiseProtocol
from protocol.release import MalformedRelease, NotInLog, UntrustedRoot
from simulations.nitrotpm import SimulatedNitroPKI


def _publish(work: Path, now: datetime) -> tuple[Path, ReleaseDirectory]:
    """A dev cluster's release and pins (what ``mantle-node dev`` publishes)."""
    layout = ClusterLayout(work)
    layout.prepare()
    provider = KeyPair.generate(
        NoiseProtocol.from_name("Noise_K_25519_ChaChaPoly_BLAKE2s").dh, SystemRandom().token_bytes
    )
    published = build_dev_release(
        layout,
        model_id="model",
        model=artifact_spec_of(b"GGUF" + bytes(1024)),
        provider_static=provider.public,
        pki=SimulatedNitroPKI(str(work)),
        now=now,
    )
    return published.pins_dir, published.bundle


def test_client_refuses_a_bundle_with_its_own_root_and_log(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    genuine_pins, genuine = _publish(tmp_path / "genuine", now)
    _, forged = _publish(tmp_path / "attacker", now)
    pins = load_pins(genuine_pins)

    state = TrustStateFile(tmp_path / "trust.json")
    assert client_release_view(genuine, pins, now, state).version == 1
    with pytest.raises(UntrustedRoot):
        client_release_view(forged, pins, now, state)

    # The genuine metadata with the attacker's log proof: not in the pinned log.
    mixed = ReleaseDirectory(tmp_path / "mixed")
    mixed.path.mkdir()
    mixed.root.write_bytes(genuine.root.read_bytes())
    mixed.targets.write_bytes(genuine.targets.read_bytes())
    mixed.log_proof.write_bytes(forged.log_proof.read_bytes())
    with pytest.raises(NotInLog):
        client_release_view(mixed, pins, now, state)


def test_client_without_pins_does_not_fall_back_to_the_bundle(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    pins_dir, _ = _publish(tmp_path / "genuine", now)
    (pins_dir / "release-root.json").unlink()
    with pytest.raises(MalformedRelease):
        load_pins(pins_dir)
    (pins_dir / "log-key.pub.pem").unlink()
    (pins_dir / "release-root.json").write_bytes(b"{}")
    with pytest.raises(KeyFileError):
        load_pins(pins_dir)
