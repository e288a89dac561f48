"""A release as installed on a node, checked end to end before it may run.

The bundle layout (``root.json``, ``targets.json``, ``log-proof.json``, in a
:class:`~mantle.ReleaseDirectory`) and the bounded reader of its files are
the client's too, so they are defined in :mod:`mantle` and re-exported here.

:func:`verify_release_bundle` is the boot-time gate: metadata (signatures,
threshold, pinned root, expiry, rollback), then the log proof against the
pinned log key, then every installed artifact's length and digests, the
expensive step last. Any failure raises a :class:`ReleaseError` whose
message says which check failed; the node must not start.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from mantle import ReleaseDirectory, read_metadata_file
from nodes.release._artifacts import verify_installed_artifacts
from protocol.release import (
    MAX_LOG_PROOF_BYTES,
    MAX_ROOT_BYTES,
    MAX_TARGETS_BYTES,
    MalformedRelease,
    NotInLog,
    ReleaseLogProof,
    VerifiedRelease,
    verify_release_in_log,
    verify_release_metadata,
)


def load_verified_metadata(
    release: ReleaseDirectory, *, trusted_root: bytes, now: datetime, min_version: int
) -> VerifiedRelease:
    return verify_release_metadata(
        read_metadata_file(release.root, MAX_ROOT_BYTES, "root metadata"),
        read_metadata_file(release.targets, MAX_TARGETS_BYTES, "targets metadata"),
        trusted_root=trusted_root,
        now=now,
        min_version=min_version,
    )


def check_log_proof(
    verified: VerifiedRelease, proof_path: Path, log_public_key: bytes
) -> ReleaseLogProof:
    missing: str | None = None
    try:
        with proof_path.open("rb") as handle:
            data = handle.read(MAX_LOG_PROOF_BYTES + 1)
    except FileNotFoundError:
        missing = f"release version {verified.version} has no log proof at {proof_path}"
    except OSError as exc:
        missing = f"cannot read log proof at {proof_path}: {exc.strerror or type(exc).__name__}"
    if missing is not None:
        raise NotInLog(missing)
    malformed: MalformedRelease | None = None
    try:
        proof = ReleaseLogProof.from_json_bytes(data)
    except MalformedRelease as exc:
        malformed = exc
    if malformed is not None:
        raise NotInLog(f"log proof at {proof_path} is malformed: {malformed}")
    verify_release_in_log(verified, proof, log_public_key)
    return proof


def verify_release_bundle(
    release: ReleaseDirectory,
    artifacts: Mapping[str, Path],
    *,
    trusted_root: bytes,
    log_public_key: bytes,
    now: datetime,
    min_version: int,
) -> VerifiedRelease:
    """Everything a node checks before running a release; returns it verified.

    ``artifacts`` must give a path for every artifact the release lists.
    """
    verified = load_verified_metadata(
        release, trusted_root=trusted_root, now=now, min_version=min_version
    )
    check_log_proof(verified, release.log_proof, log_public_key)
    verify_installed_artifacts(verified, artifacts, require_all=True)
    return verified
