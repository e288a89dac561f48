"""Attack: pass off a release signed under a root of the attacker's own making.

Whoever can write a release directory can also write its ``root.json``: a
fresh root naming the attacker's keys, signed by those keys, and targets
signed by them too. ``mantle-node release verify`` without ``--trusted-root``
and ``verify_release_metadata(trusted_root=None)`` let that root vouch for
itself and reported the release verified; ``tlog append`` without a pin put it
in the transparency log. A release must verify against a root the caller
pins (a file the operator keeps), never against the bundle's own root.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nodes.cli import main
from nodes.release import ReleaseDirectory, load_verified_metadata, verify_release_bundle
from nodes.tlog import load_log_public_key
from protocol.release import ReleaseError, UntrustedRoot, verify_release_metadata


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def _signed_release(base: Path, name: str) -> Path:
    """A complete, well-signed release directory under a root ``name`` creates."""
    keys, release = base / f"{name}-keys", base / f"{name}-release"
    keys.mkdir()
    release.mkdir()
    (base / f"{name}-app.bin").write_bytes(f"{name}'s code".encode())
    root = release / "root.json"
    assert run("release", "keygen", "--out", keys / "owner.pem") == 0
    assert run("release", "keygen", "--out", keys / "signer.pem") == 0
    assert run("release", "init", "--root", root, "--threshold", "1") == 0
    for key, role in (("owner", "root"), ("signer", "targets")):
        assert (
            run(
                "release",
                "add-signer",
                "--root",
                root,
                "--key",
                keys / f"{key}.pub.pem",
                "--role",
                role,
            )
            == 0
        )
    assert run("release", "sign", root, "--key", keys / "owner.pem") == 0
    targets = release / "targets.json"
    artifact = f"code/app.bin={base / f'{name}-app.bin'}"
    assert run("release", "build", "--out", targets, "--version", "9", "--artifact", artifact) == 0
    assert run("release", "sign", targets, "--key", keys / "signer.pem") == 0
    return release


@pytest.fixture
def world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    operator = _signed_release(tmp_path, "operator")
    pinned = tmp_path / "pinned-root.json"
    pinned.write_bytes((operator / "root.json").read_bytes())
    attacker = _signed_release(tmp_path, "attacker")
    db, log_key = tmp_path / "tlog.sqlite", tmp_path / "log.pem"
    assert run("tlog", "keygen", "--out", log_key) == 0
    assert run("tlog", "init", "--db", db, "--key", log_key) == 0
    capsys.readouterr()
    return {"pinned": pinned, "attacker": attacker, "db": db, "log_key": log_key, "base": tmp_path}


def test_release_verify_refuses_to_run_without_a_pinned_root(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run("release", "verify", "--release-dir", world["attacker"], "--skip-log")
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert "--trusted-root" in err
    assert "verified" not in out


def test_the_attackers_release_fails_against_the_operators_pin(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    verify = ["release", "verify", "--release-dir", world["attacker"], "--skip-log"]
    assert run(*verify, "--trusted-root", world["pinned"]) == 1
    out, err = capsys.readouterr()
    assert "UntrustedRoot" in err and "verified" not in out


def test_the_bundles_own_root_is_not_a_pin(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    own_root = world["attacker"] / "root.json"
    verify = ["release", "verify", "--release-dir", world["attacker"], "--skip-log"]
    assert run(*verify, "--trusted-root", own_root) == 2
    out, err = capsys.readouterr()
    assert "own root.json" in err and "verified" not in out


def test_the_library_refuses_a_missing_pin(world: dict[str, Path]) -> None:
    release = ReleaseDirectory(world["attacker"])
    root, targets = release.root.read_bytes(), release.targets.read_bytes()
    now = datetime.now(UTC)
    for missing in (None, b""):
        with pytest.raises(UntrustedRoot):
            verify_release_metadata(root, targets, trusted_root=missing, now=now, min_version=0)  # type: ignore[arg-type]
        with pytest.raises(UntrustedRoot):
            load_verified_metadata(release, trusted_root=missing, now=now, min_version=0)  # type: ignore[arg-type]
        with pytest.raises(UntrustedRoot):
            verify_release_bundle(
                release,
                {},
                trusted_root=missing,  # type: ignore[arg-type]
                log_public_key=load_log_public_key(world["base"] / "log.pub.pem"),
                now=now,
                min_version=0,
            )
    # Against the operator's pin the same bundle is refused as well.
    with pytest.raises(ReleaseError):
        verify_release_metadata(
            root, targets, trusted_root=world["pinned"].read_bytes(), now=now, min_version=0
        )


def test_the_log_admits_no_release_without_a_pin(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    append = ["tlog", "append", "--db", world["db"], "--key", world["log_key"]]
    append += ["--release-dir", world["attacker"]]
    with pytest.raises(SystemExit) as exited:
        run(*append)
    assert exited.value.code == 2
    assert run(*append, "--trusted-root", world["pinned"]) == 1
    capsys.readouterr()
    # Nothing entered the log: its audit still covers zero entries.
    assert (
        run("tlog", "verify", "--db", world["db"], "--log-key", world["base"] / "log.pub.pem") == 0
    )
    assert "0 entries" in capsys.readouterr().out
