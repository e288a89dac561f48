"""Attack: edit a saved receipt file so it vouches for something else.

A receipt is evidence a third party may be shown later: the operator (or
anyone holding the file) edits it to claim another response, another release,
or re-signs it with a key of its own. ``mantle receipt verify`` must refuse
every edit, naming the check: the hashes the file carries are the signed
ones, the signature covers every field, the document's own signature holds,
and a receipt key of the attacker's is bound by no attested document.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_cluster import Cluster, run_cli, start_cluster
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mantle import cli
from protocol.e2e import SavedReceipt, sign_receipt


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("edited-receipt")) as running:
        yield running


@pytest.fixture(scope="module")
def saved(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> SavedReceipt:
    """One genuine receipt file, saved by ``mantle chat``, for every edit."""
    base = tmp_path_factory.mktemp("chat")
    path = base / "answer.receipt"
    argv = ["chat", cluster.url, *cluster.client(base / "state.json")]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main([*argv, "--max-tokens", "3", "--save-receipt", str(path), "hi"]) == 0
    return SavedReceipt.decode(path.read_bytes())


def _refused(
    cluster: Cluster, edited: SavedReceipt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    path = tmp_path / "edited.receipt"
    path.write_bytes(edited.encode())
    status, out, _ = run_cli(["receipt", "verify", str(path), *cluster.receipt()], capsys)
    assert status == 1, out
    assert "verdict: VERIFIED" not in out
    return out


def test_the_unedited_receipt_verifies(
    cluster: Cluster, saved: SavedReceipt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "saved.receipt"
    path.write_bytes(saved.encode())
    status, out, _ = run_cli(["receipt", "verify", str(path), *cluster.receipt()], capsys)
    assert status == 0 and out.endswith("verdict: VERIFIED\n"), out


def test_another_response_hash_is_refused(
    cluster: Cluster, saved: SavedReceipt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = hashlib.sha256(b"another answer").digest()
    edited = dataclasses.replace(saved, response_sha256=other)
    out = _refused(cluster, edited, tmp_path, capsys)
    assert out.startswith("verdict: REFUSED (check: receipt.response)"), out


def test_a_signed_field_edited_is_refused(
    cluster: Cluster, saved: SavedReceipt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = hashlib.sha256(b"another answer").digest()
    receipt = dataclasses.replace(saved.receipt, response_sha256=other)
    edited = dataclasses.replace(saved, receipt=receipt, response_sha256=other)
    out = _refused(cluster, edited, tmp_path, capsys)
    assert out.startswith("verdict: REFUSED (check: receipt.signature)"), out
    newer = dataclasses.replace(saved.receipt, release_version=2)
    out = _refused(cluster, dataclasses.replace(saved, receipt=newer), tmp_path, capsys)
    assert out.startswith("verdict: REFUSED (check: receipt.signature)"), out


def test_a_receipt_re_signed_with_the_attackers_key_is_refused(
    cluster: Cluster, saved: SavedReceipt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = saved.receipt
    other = hashlib.sha256(b"another answer").digest()
    forged = sign_receipt(
        Ed25519PrivateKey.generate(),
        request_id=original.request_id,
        request_sha256=original.request_sha256,
        response_sha256=other,
        model=original.model,
        model_sha384=original.model_sha384,
        release_version=original.release_version,
    )
    edited = dataclasses.replace(saved, receipt=forged, response_sha256=other)
    out = _refused(cluster, edited, tmp_path, capsys)
    assert out.startswith("verdict: REFUSED (check: document.user_data)"), out


def test_a_document_with_a_flipped_byte_is_refused(
    cluster: Cluster, saved: SavedReceipt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = bytearray(saved.document)
    document[-1] ^= 0x01  # inside the COSE signature
    edited = dataclasses.replace(saved, document=bytes(document))
    out = _refused(cluster, edited, tmp_path, capsys)
    assert out.startswith("verdict: REFUSED (check: document.signature)"), out
