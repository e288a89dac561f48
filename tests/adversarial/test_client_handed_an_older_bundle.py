"""Attack: hand a client an old, still validly signed and logged release bundle.

The release signers published v2 with a floor of 2 (``min_version``): v1 must
get no prompt. A verifier only knows the releases it is handed, so the
operator, who relays every bundle, hands the client v1 again after the client
has seen v2. Before the fix the demo's client verified every bundle with
``min_version=0`` and accepted v1; now it keeps the highest floor it has
verified on its own disk and refuses releases below it -- also across runs --
and a damaged state file is refused, never read as "no floor".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _release_kit import NOW, ReleaseFiles, ReleaseKit

from mantle import TrustPins, client_release_view
from mantle.trust_state import TrustStateError, TrustStateFile
from nodes.release import ReleaseDirectory
from protocol.attestation import TrustAnchor
from protocol.release import VersionRollback
from simulations.nitrotpm import SimulatedNitroPKI


def _bundle(path: Path, files: ReleaseFiles) -> ReleaseDirectory:
    bundle = ReleaseDirectory(path)
    files.write_to(bundle)
    return bundle


def test_a_client_that_saw_the_floor_refuses_an_older_release(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    old = _bundle(tmp_path / "v1", kit.publish(1))
    new = _bundle(tmp_path / "v2", kit.publish(2, min_version=2))
    pins = TrustPins(
        attestation_root=TrustAnchor.from_der(SimulatedNitroPKI("cloud").root_der),
        release_root=kit.root,
        log_public_key=kit.log_public_key,
    )
    state = TrustStateFile(tmp_path / "client" / "trust.json")

    assert client_release_view(new, pins, NOW, state).version == 2
    with pytest.raises(VersionRollback):
        client_release_view(old, pins, NOW, state)

    # The next run of the same client remembers the floor.
    with pytest.raises(VersionRollback):
        client_release_view(old, pins, NOW, TrustStateFile(tmp_path / "client" / "trust.json"))
    assert client_release_view(new, pins, NOW, state).version == 2


def test_a_damaged_state_file_is_refused_not_read_as_no_floor(tmp_path: Path) -> None:
    kit = ReleaseKit(install_root=tmp_path / "install")
    old = _bundle(tmp_path / "v1", kit.publish(1))
    pins = TrustPins(
        attestation_root=TrustAnchor.from_der(SimulatedNitroPKI("cloud").root_der),
        release_root=kit.root,
        log_public_key=kit.log_public_key,
    )
    path = tmp_path / "trust.json"
    for damaged in (b"", b"{}", b'{"release_floor": -1, "version": 1}', b"\xff" * 10):
        path.write_bytes(damaged)
        with pytest.raises(TrustStateError):
            client_release_view(old, pins, NOW, TrustStateFile(path))
