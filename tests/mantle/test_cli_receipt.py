"""``mantle chat --save-receipt`` then ``mantle receipt verify``, on a real cluster.

The receipt file a chat saved verifies offline (the command takes no URL and
fetches nothing) against the user's pins and the release bundle: signature and hashes,
the release, the receipt naming it, and the node's document at its own time
with the receipt key bound. The file holds hashes only: the prompt is not in
it, nor in anything the commands print.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_cluster import Cluster, chat_and_save, run_cli, start_cluster

from protocol.e2e import MAX_SAVED_RECEIPT_BYTES, SavedReceipt

CANARY = "CANARY-receipt-3c8d the otter swims at noon"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("cli-receipt")) as running:
        yield running


def test_a_saved_receipt_verifies_offline(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved_path = chat_and_save(cluster, tmp_path, capsys, CANARY)
    data = saved_path.read_bytes()
    assert CANARY.encode() not in data and b"otter" not in data
    saved = SavedReceipt.decode(data)
    assert saved.receipt.release_version == 1 and saved.receipt.model == "scripted"

    status, out, err = run_cli(["receipt", "verify", str(saved_path), *cluster.receipt()], capsys)
    assert status == 0, out + err
    lines = out.splitlines()
    assert lines[-1] == "verdict: VERIFIED"
    assert f"receipt: request {saved.receipt.request_id.hex()}, model scripted" in lines
    assert any(line.startswith("release: version 1, sha384 ") for line in lines)
    assert re.search(r"^document: nitro, module id sim-", out, re.MULTILINE)
    assert f"receipt key binding: {saved.receipt_key_binding().hex()}" in out
    shown = dict(re.findall(r"^\s+(\d+): ([0-9a-f]{96})$", out, re.MULTILINE))
    assert {"4", "7", "12", "13", "14"} <= set(shown)
    assert "CANARY" not in out + err


def test_a_file_that_is_no_receipt_is_refused(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.receipt"
    junk.write_bytes(b"\x93\x01\x02\x03")
    status, out, _ = run_cli(["receipt", "verify", str(junk), *cluster.receipt()], capsys)
    assert status == 1
    assert out.startswith("verdict: REFUSED (check: receipt.malformed)"), out


def test_an_oversized_file_is_not_read_whole(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.receipt"
    big.write_bytes(b"\0" * (MAX_SAVED_RECEIPT_BYTES + 1))
    status, out, err = run_cli(["receipt", "verify", str(big), *cluster.receipt()], capsys)
    assert status == 2 and out == ""
    assert "receipt file" in err


def test_without_a_pin_it_does_not_start(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved_path = tmp_path / "r.receipt"
    saved_path.write_bytes(b"")
    argv = ["receipt", "verify", str(saved_path), "--release-dir", str(cluster.layout.release_dir)]
    status, out, err = run_cli(argv, capsys)
    assert status == 2 and out == ""
    assert "no attestation root (--root) pinned" in err
