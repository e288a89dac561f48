"""Attack: pass off a receipt made on another release as one of the release the user checks.

Two clusters run the same code and the same model under release version 1,
each signed by its own release root: the receipt's version and model digest
alone cannot tell them apart. The operator shows a receipt from cluster A to
a user who pins cluster B's release root and log key (and an attestation
root both clusters' documents could chain to: here A's). ``mantle receipt
verify`` must hold the saved document to B's release's PCR policy for the
model -- the application registers commit to the release digest -- and
refuse, naming the PCR check.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_cluster import Cluster, chat_and_save, run_cli, start_cluster

from mantle import ATTESTATION_ROOT_PIN


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    with (
        start_cluster(tmp_path_factory.mktemp("release-a")) as first,
        start_cluster(tmp_path_factory.mktemp("release-b")) as second,
    ):
        yield first, second


def test_a_receipt_from_another_release_is_refused(
    clusters: tuple[Cluster, Cluster], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made_on, shown_as = clusters
    saved = chat_and_save(made_on, tmp_path, capsys, "hello")
    # The user's pins: B's release root and log key, an attestation root A's nodes chain to.
    pins = tmp_path / "pins"
    shutil.copytree(shown_as.layout.pins_dir, pins)
    (pins / ATTESTATION_ROOT_PIN).write_bytes(
        (made_on.layout.pins_dir / ATTESTATION_ROOT_PIN).read_bytes()
    )
    argv = ["receipt", "verify", str(saved), *shown_as.receipt(pins=pins)]
    status, out, _ = run_cli(argv, capsys)
    assert status == 1
    assert out.startswith("verdict: REFUSED (check: document.pcr_policy)"), out
    # Against A's own release the same file verifies: the refusal is the release's.
    status, out, _ = run_cli(["receipt", "verify", str(saved), *made_on.receipt()], capsys)
    assert status == 0, out
