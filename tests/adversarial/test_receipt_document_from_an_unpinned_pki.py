"""Attack: vouch for a receipt with a document from an attestation PKI the user did not pin.

The operator runs a simulated cloud of its own (or shows a receipt made on
one): its documents are well formed and bind the receipt key, but chain to
a root that is not the user's. ``mantle receipt verify`` checks the saved
document against the pinned root only, never against a root the file or the
cluster could bring: a receipt checked against another root is refused,
naming the chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_cluster import Cluster, chat_and_save, run_cli, start_cluster

from simulations import cli as sim_cli


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("receipt-pki")) as running:
        yield running


def test_a_receipt_against_another_attestation_root_is_refused(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = chat_and_save(cluster, tmp_path, capsys, "hello")
    # The same file verifies under the root the cluster's nodes chain to ...
    status, out, _ = run_cli(["receipt", "verify", str(saved), *cluster.receipt()], capsys)
    assert status == 0, out
    # ... and not under another cloud's root.
    other_root = tmp_path / "other-root.pem"
    assert sim_cli.main(["tpm", "root", "--seed", "another cloud", "-o", str(other_root)]) == 0
    capsys.readouterr()
    argv = ["receipt", "verify", str(saved), *cluster.receipt(root=other_root)]
    status, out, _ = run_cli(argv, capsys)
    assert status == 1
    assert out.startswith("verdict: REFUSED (check: document.chain_root)"), out
