"""Operator tooling end to end, and the boot gate refusing each bad release.

Everything goes through ``mantle-node`` (``nodes.cli.main``) with real key
files, real metadata, a real SQLite log; the refusals are also checked on the
library gate a node calls at boot (``verify_release_bundle``).
"""

from __future__ import annotations

import os
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nodes.cli import SUBCOMMAND_MODULES, main
from nodes.release import (
    ReleaseDirectory,
    artifact_paths_in,
    hash_artifact,
    load_verified_metadata,
    verify_installed_artifacts,
    verify_release_bundle,
)
from nodes.store import SqliteStore
from nodes.tlog import load_log_public_key
from protocol.release import (
    ArtifactMismatch,
    BelowThreshold,
    Expired,
    NotInLog,
    VersionRollback,
)
from protocol.tlog import leaf_hash


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


class Operator:
    """An operator's workspace: keys outside the node, a release dir, a log."""

    def __init__(self, base: Path) -> None:
        self.keys = base / "keys"
        self.keys.mkdir()
        self.install = base / "install"
        (self.install / "config").mkdir(parents=True)
        (self.install / "models").mkdir()
        (self.install / "mantle-0.1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 wheel")
        (self.install / "config" / "node-schema.json").write_text('{"type": "object"}')
        (self.install / "models" / "demo.gguf").write_bytes(b"GGUF" + os.urandom(5000))
        self.release = base / "release"
        self.release.mkdir()
        self.db = base / "tlog.sqlite"
        for name in ("owner", "alice", "bob", "carol", "mallory"):
            assert run("release", "keygen", "--out", self.keys / f"{name}.pem") == 0
        assert (
            run("release", "keygen", "--out", self.keys / "erin.pem", "--type", "ecdsa-p256") == 0
        )
        assert run("tlog", "keygen", "--out", self.keys / "log.pem") == 0
        assert run("tlog", "init", "--db", self.db, "--key", self.keys / "log.pem") == 0
        self.root = self.release / "root.json"
        assert run("release", "init", "--root", self.root, "--threshold", "2") == 0
        assert (
            run(
                "release",
                "add-signer",
                "--root",
                self.root,
                "--key",
                self.keys / "owner.pub.pem",
                "--role",
                "root",
            )
            == 0
        )
        for name in ("alice", "bob", "carol", "erin"):
            assert (
                run(
                    "release",
                    "add-signer",
                    "--root",
                    self.root,
                    "--key",
                    self.keys / f"{name}.pub.pem",
                )
                == 0
            )
        assert run("release", "sign", self.root, "--key", self.keys / "owner.pem") == 0
        self.pinned_root = base / "pinned-root.json"
        shutil.copy(self.root, self.pinned_root)

    def build(self, version: int, *signers: str, log: bool = True) -> None:
        targets = self.release / "targets.json"
        targets.unlink(missing_ok=True)
        (self.release / "log-proof.json").unlink(missing_ok=True)
        assert (
            run(
                "release",
                "build",
                "--out",
                targets,
                "--version",
                str(version),
                "--dir",
                self.install,
            )
            == 0
        )
        if signers:
            keys: list[str | Path] = []
            for name in signers:
                keys += ["--key", self.keys / f"{name}.pem"]
            assert run("release", "sign", targets, *keys) == 0
        if log:
            assert (
                run(
                    "tlog",
                    "append",
                    "--db",
                    self.db,
                    "--key",
                    self.keys / "log.pem",
                    "--release-dir",
                    self.release,
                    "--trusted-root",
                    self.pinned_root,
                )
                == 0
            )

    def verify_cli(self, *extra: str | Path) -> int:
        return run(
            "release",
            "verify",
            "--release-dir",
            self.release,
            "--trusted-root",
            self.pinned_root,
            "--log-key",
            self.keys / "log.pub.pem",
            "--artifacts-dir",
            self.install,
            *extra,
        )

    def boot(self, *, min_version: int = 0, now: datetime | None = None) -> None:
        verified = load_verified_metadata(
            ReleaseDirectory(self.release),
            trusted_root=self.pinned_root.read_bytes(),
            now=now or datetime.now(UTC),
            min_version=min_version,
        )
        verify_release_bundle(
            ReleaseDirectory(self.release),
            artifact_paths_in(self.install, verified),
            trusted_root=self.pinned_root.read_bytes(),
            log_public_key=load_log_public_key(self.keys / "log.pub.pem"),
            now=now or datetime.now(UTC),
            min_version=min_version,
        )


@pytest.fixture
def operator(tmp_path: Path) -> Operator:
    return Operator(tmp_path)


def test_dispatcher_lists_both_groups() -> None:
    assert "nodes._cli_release" in SUBCOMMAND_MODULES and "nodes._cli_model" in SUBCOMMAND_MODULES
    with pytest.raises(SystemExit):
        main(["--help"])


def test_good_release_verifies_and_signing_keys_stay_private(
    operator: Operator, capsys: pytest.CaptureFixture[str]
) -> None:
    operator.build(3, "alice", "erin")
    capsys.readouterr()
    assert operator.verify_cli("--min-version", "3") == 0
    assert "release version 3 verified" in capsys.readouterr().out
    operator.boot(min_version=3)
    assert (operator.keys / "alice.pem").stat().st_mode & 0o777 == 0o600
    assert (
        run("tlog", "verify", "--db", operator.db, "--log-key", operator.keys / "log.pub.pem") == 0
    )
    # A key file is never overwritten.
    assert run("release", "keygen", "--out", operator.keys / "alice.pem") == 2


def test_tlog_verify_refuses_entries_no_signed_head_covers(
    operator: Operator, capsys: pytest.CaptureFixture[str]
) -> None:
    operator.build(3, "alice", "erin")
    log_key = operator.keys / "log.pub.pem"
    assert run("tlog", "verify", "--db", operator.db, "--log-key", log_key) == 0
    # An entry written around the log (no node, no head): an audit must notice.
    store = SqliteStore(operator.db)
    store.execute(
        "INSERT INTO tlog_leaves (idx, leaf_hash, leaf_input) VALUES (1, ?, ?)",
        (leaf_hash(b"smuggled"), b"smuggled"),
    )
    store.close()
    capsys.readouterr()
    assert run("tlog", "verify", "--db", operator.db, "--log-key", log_key) == 1
    assert "no signed tree head covers all 2 entries" in capsys.readouterr().err


def test_tampered_artifact_stops_boot(
    operator: Operator, capsys: pytest.CaptureFixture[str]
) -> None:
    operator.build(3, "alice", "bob")
    model = operator.install / "models" / "demo.gguf"
    data = bytearray(model.read_bytes())
    data[100] ^= 1
    model.write_bytes(bytes(data))
    capsys.readouterr()
    assert operator.verify_cli() == 1
    assert "ArtifactMismatch" in capsys.readouterr().err
    with pytest.raises(ArtifactMismatch) as caught:
        operator.boot()
    assert (caught.value.name, caught.value.check) == ("models/demo.gguf", "sha384")


def test_missing_signature_stops_boot(
    operator: Operator, capsys: pytest.CaptureFixture[str]
) -> None:
    operator.build(3, "alice", log=False)
    # The log itself refuses to admit an under-signed release ...
    assert (
        run(
            "tlog",
            "append",
            "--db",
            operator.db,
            "--key",
            operator.keys / "log.pem",
            "--release-dir",
            operator.release,
            "--trusted-root",
            operator.pinned_root,
        )
        == 1
    )
    capsys.readouterr()
    assert operator.verify_cli() == 1
    assert "BelowThreshold" in capsys.readouterr().err
    with pytest.raises(BelowThreshold, match="1 valid signature"):
        operator.boot()


def test_wrong_key_stops_boot(operator: Operator, capsys: pytest.CaptureFixture[str]) -> None:
    operator.build(3, "mallory", "alice", log=False)
    capsys.readouterr()
    assert operator.verify_cli() == 1
    assert "UnknownSigner" in capsys.readouterr().err


def test_rollback_stops_boot(operator: Operator, capsys: pytest.CaptureFixture[str]) -> None:
    operator.build(3, "alice", "bob")
    capsys.readouterr()
    assert operator.verify_cli("--min-version", "4") == 1
    assert "rollback" in capsys.readouterr().err
    with pytest.raises(VersionRollback):
        operator.boot(min_version=4)


def test_expired_root_stops_boot(operator: Operator, capsys: pytest.CaptureFixture[str]) -> None:
    operator.build(3, "alice", "bob")
    future = datetime.now(UTC) + timedelta(days=400)  # root lives 365 days, targets 90
    capsys.readouterr()
    assert operator.verify_cli("--now", future.isoformat()) == 1
    assert "root metadata expired" in capsys.readouterr().err
    with pytest.raises(Expired) as caught:
        operator.boot(now=future)
    assert caught.value.role == "root"


def test_release_missing_from_the_log_stops_boot(
    operator: Operator, capsys: pytest.CaptureFixture[str]
) -> None:
    operator.build(3, "alice", "bob")
    old_proof = (operator.release / "log-proof.json").read_bytes()
    operator.build(4, "alice", "bob", log=False)
    capsys.readouterr()
    assert operator.verify_cli() == 1
    assert "no log proof" in capsys.readouterr().err
    # Presenting the proof of another (logged) release does not help.
    (operator.release / "log-proof.json").write_bytes(old_proof)
    with pytest.raises(NotInLog, match="version 4"):
        operator.boot()
    # Once logged, the same release boots.
    assert (
        run(
            "tlog",
            "append",
            "--db",
            operator.db,
            "--key",
            operator.keys / "log.pem",
            "--release-dir",
            operator.release,
            "--trusted-root",
            operator.pinned_root,
        )
        == 0
    )
    operator.boot(min_version=4)
    assert (
        run(
            "tlog",
            "prove",
            "--db",
            operator.db,
            "--log-key",
            operator.keys / "log.pub.pem",
            "--release-dir",
            operator.release,
            "--trusted-root",
            operator.pinned_root,
        )
        == 0
    )
    operator.boot(min_version=4)


def test_verify_installed_artifacts_names_each_failed_check(operator: Operator) -> None:
    operator.build(3, "alice", "bob")
    verified = load_verified_metadata(
        ReleaseDirectory(operator.release),
        trusted_root=operator.pinned_root.read_bytes(),
        now=datetime.now(UTC),
        min_version=0,
    )
    paths = artifact_paths_in(operator.install, verified)
    verify_installed_artifacts(verified, paths, require_all=True)
    cases: list[tuple[dict[str, Path], str]] = [
        ({**paths, "models/demo.gguf": operator.install / "absent"}, "missing"),
        ({**paths, "models/demo.gguf": operator.install / "models"}, "not-a-file"),
        ({**paths, "models/demo.gguf": operator.install / "config" / "node-schema.json"}, "length"),
        ({**paths, "extra.bin": operator.install / "config" / "node-schema.json"}, "unlisted"),
    ]
    for mapping, check in cases:
        with pytest.raises(ArtifactMismatch) as caught:
            verify_installed_artifacts(verified, mapping)
        assert caught.value.check == check
    partial = {k: v for k, v in paths.items() if not k.startswith("models/")}
    verify_installed_artifacts(verified, partial)
    with pytest.raises(ArtifactMismatch) as caught:
        verify_installed_artifacts(verified, partial, require_all=True)
    assert caught.value.check == "missing"
    same_length = operator.install / "same-length"
    same_length.write_bytes(b"\x00" * verified.artifacts["models/demo.gguf"].length)
    with pytest.raises(ArtifactMismatch) as caught:
        verify_installed_artifacts(verified, {"models/demo.gguf": same_length})
    assert caught.value.check == "sha384"


def test_fifo_in_place_of_an_artifact_is_refused_without_waiting(operator: Operator) -> None:
    operator.build(3, "alice", "bob")
    verified = load_verified_metadata(
        ReleaseDirectory(operator.release),
        trusted_root=operator.pinned_root.read_bytes(),
        now=datetime.now(UTC),
        min_version=0,
    )
    fifo = operator.install / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def check() -> None:
        try:
            verify_installed_artifacts(verified, {"models/demo.gguf": fifo})
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        # Release the blocked open so the thread ends, then fail.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail("opening a FIFO artifact blocked waiting for a writer")
    assert len(outcome) == 1 and isinstance(outcome[0], ArtifactMismatch)
    assert outcome[0].check == "not-a-file"


def test_hash_artifact_streams_multiple_algorithms(tmp_path: Path) -> None:
    import hashlib

    blob = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "blob"
    path.write_bytes(blob)
    spec = hash_artifact(path, ["sha256", "sha384", "sha512"])
    assert spec.length == len(blob)
    for name in ("sha256", "sha384", "sha512"):
        assert spec.hashes[name] == hashlib.new(name, blob).digest()


def test_cli_reports_unusable_input(operator: Operator, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = operator.release / "nope"
    pin = operator.pinned_root
    assert (
        run("release", "verify", "--release-dir", nowhere, "--trusted-root", pin, "--skip-log") == 1
    )
    assert "cannot read root metadata" in capsys.readouterr().err
    assert (
        run(
            "release",
            "build",
            "--out",
            operator.release / "t.json",
            "--version",
            "1",
            "--artifact",
            "bad",
        )
        == 2
    )
    assert (
        run(
            "release", "add-signer", "--root", operator.root, "--key", operator.keys / "missing.pem"
        )
        == 2
    )


def test_build_lists_a_sealed_model_by_its_manifest_without_the_plaintext(tmp_path: Path) -> None:
    import hashlib

    from nodes.model_store import SealedModelInfo
    from protocol.measurement import model_artifact_name

    weights = b"GGUF" + os.urandom(3000)
    manifest = tmp_path / "manifest.json"
    info = SealedModelInfo(
        model_id="demo",
        key_version=1,
        plaintext_length=len(weights),
        plaintext_sha384=hashlib.sha384(weights).digest(),
        sealed_sha384=hashlib.sha384(b"sealed").digest(),
        chunk_size=1 << 16,
    )
    manifest.write_bytes(info.to_json())
    config = tmp_path / "cluster.json"
    config.write_text("{}")
    out = tmp_path / "targets.json"
    assert (
        run(
            "release",
            "build",
            "--out",
            out,
            "--version",
            "1",
            "--artifact",
            f"config/cluster.json={config}",
            "--model",
            manifest,
        )
        == 0
    )
    text = out.read_text()
    assert model_artifact_name("demo") in text
    assert hashlib.sha384(weights).hexdigest() in text
    # The same model listed twice, or a garbage manifest, is unusable input.
    assert (
        run(
            "release",
            "build",
            "--out",
            tmp_path / "t2.json",
            "--version",
            "1",
            "--model",
            manifest,
            "--model",
            manifest,
        )
        == 2
    )
    manifest.write_text("not json")
    assert (
        run(
            "release", "build", "--out", tmp_path / "t3.json", "--version", "1", "--model", manifest
        )
        == 2
    )
