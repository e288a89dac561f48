"""Releases on a node and for operators: artifact hashing and the boot gate.

* ``verify_installed_artifacts(verified, {name: Path}) -> None`` — raises
  :class:`~protocol.release.ArtifactMismatch` naming the artifact and check.
* ``verify_release_bundle(ReleaseDirectory, artifacts, *, trusted_root,
  log_public_key, now, min_version) -> VerifiedRelease`` — metadata, log
  proof, then artifacts: the check a node runs before serving.
* ``hash_artifact(path, algorithms)`` — length and digests for ``release build``.
* The running code: ``SourceTree.running()`` (the directories the process
  imports Mantle from), ``source_manifest(tree)`` (the release's code
  artifact) and ``verify_source_tree(manifest, tree) -> SourceTreeCheck``
  (boot's check: every file hashed, every bytecode cache compiled and compared).
* Key files (operators): ``write_keypair``, ``load_private_key``, ``load_public_key``.
* Publishing (the release signers' and the log operator's side, for the demo
  and the tests): :class:`ReleasePublisher` -- k-of-n signers and their root,
  targets naming the source manifest, the node image, the config and the
  models (with their providers' keys) at a version and floor, the log entry
  and its inclusion proof, the install directory -- and :class:`ReleaseFiles`.
* Shared with the client and re-exported from :mod:`mantle`: the bundle
  layout (``ReleaseDirectory``, ``ROOT_FILE``, ``TARGETS_FILE``,
  ``LOG_PROOF_FILE``), ``read_metadata_file`` and ``KeyFileError``.

Metadata verification itself is pure and lives in :mod:`protocol.release`.
"""

from mantle import (
    LOG_PROOF_FILE,
    ROOT_FILE,
    TARGETS_FILE,
    KeyFileError,
    ReleaseDirectory,
    read_metadata_file,
)
from nodes.release._artifacts import (
    CHUNK_SIZE,
    artifact_paths_in,
    hash_artifact,
    verify_installed_artifacts,
)
from nodes.release._bundle import (
    check_log_proof,
    load_verified_metadata,
    verify_release_bundle,
)
from nodes.release._keyfiles import (
    load_private_key,
    load_public_key,
    read_small_file,
    write_keypair,
    write_new_file,
)
from nodes.release._publish import (
    INSTALLED_ARTIFACTS,
    PublishedRelease,
    ReleaseFiles,
    ReleasePublisher,
    artifact_spec_of,
    inclusion_proof_of,
)
from nodes.release._source import (
    SourceTree,
    SourceTreeCheck,
    SourceTreeError,
    running_source_manifest,
    source_manifest,
    verify_source_tree,
)

__all__ = [
    "CHUNK_SIZE",
    "INSTALLED_ARTIFACTS",
    "LOG_PROOF_FILE",
    "ROOT_FILE",
    "TARGETS_FILE",
    "KeyFileError",
    "PublishedRelease",
    "ReleaseDirectory",
    "ReleaseFiles",
    "ReleasePublisher",
    "SourceTree",
    "SourceTreeCheck",
    "SourceTreeError",
    "artifact_paths_in",
    "artifact_spec_of",
    "check_log_proof",
    "hash_artifact",
    "inclusion_proof_of",
    "load_private_key",
    "load_public_key",
    "load_verified_metadata",
    "read_metadata_file",
    "read_small_file",
    "running_source_manifest",
    "source_manifest",
    "verify_installed_artifacts",
    "verify_release_bundle",
    "verify_source_tree",
    "write_keypair",
    "write_new_file",
]
