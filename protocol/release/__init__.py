"""Release metadata: what may run, who signed it, and whether it is logged.

A release is TUF metadata (python-tuf's Metadata API): a **root** naming the
release-signer keys and a threshold k of n for the ``targets`` role, and
**targets** listing every artifact (code wheel or source-tree digest, node
config schema, model files) with length and hashes, a monotonic version and
an expiry.

Public surface:

* ``verify_release_metadata(root_bytes, targets_bytes, *, trusted_root, now,
  min_version) -> VerifiedRelease`` — signatures, thresholds, root pinning
  (``trusted_root`` is required: the caller's pin, never the bundle's own
  root) and rotation, expiry, rollback, artifact list. ``VerifiedRelease`` carries
  ``version``, ``artifacts`` (name -> :class:`ArtifactSpec` ``(length,
  hashes)``), ``release_digest`` (SHA-384 of the signed targets bytes),
  ``expires``, ``root_version``, ``root_digest``, ``signer_keyids``,
  ``image_measurements`` (the node image's PCR 4, 7, 12) and ``min_version``
  (the release floor the signers publish).
* ``release_log_entry(verified) -> bytes`` — the canonical transparency-log
  entry; ``ReleaseLogProof`` (a JSON document of at most
  ``MAX_LOG_PROOF_BYTES``) and ``verify_release_in_log`` — the check that
  the entry is in the log pinned by its Ed25519 key.
* Builders for operator tooling: ``new_root``, ``add_signer``,
  ``bump_root_version``, ``new_targets``, ``sign_metadata``,
  ``metadata_to_bytes``, ``metadata_from_bytes``.
* The source manifest (``code/mantle-source.manifest``): ``format_source_manifest``,
  ``parse_source_manifest``, ``compare_source_tree`` (the pure half of boot's
  running-code check; the walking and hashing are in ``nodes.release``).
* Errors, all :class:`ReleaseError`: ``MalformedRelease``, ``BelowThreshold``
  (with ``UnknownSigner`` a.k.a. ``WrongKey``, and ``BadSignature``),
  ``UntrustedRoot``, ``Expired``, ``VersionRollback``,
  ``ArtifactMismatch(name, check)``, ``NotInLog``,
  ``SourceTreeMismatch(check, path)``.

Installed artifacts are hashed in ``nodes.release.verify_installed_artifacts``.
"""

from protocol.release._build import (
    SIGNER_ROLES,
    add_signer,
    bump_root_version,
    metadata_from_bytes,
    metadata_to_bytes,
    new_root,
    new_targets,
    sign_metadata,
)
from protocol.release._errors import (
    ArtifactCheck,
    ArtifactMismatch,
    BadSignature,
    BelowThreshold,
    Expired,
    MalformedRelease,
    NotInLog,
    ReleaseError,
    UnknownSigner,
    UntrustedRoot,
    VersionRollback,
    WrongKey,
)
from protocol.release._log import (
    MAX_LOG_PROOF_BYTES,
    RELEASE_ENTRY_SIZE,
    RELEASE_ENTRY_TAG,
    ReleaseLogEntry,
    ReleaseLogProof,
    decode_release_log_entry,
    encode_release_log_entry,
    release_log_entry,
    release_log_proof,
    verify_release_in_log,
)
from protocol.release._model import (
    DEFAULT_HASH_ALGORITHM,
    HASH_ALGORITHMS,
    ArtifactSpec,
    VerifiedRelease,
)
from protocol.release._source import (
    BYTECODE_CACHE_DIRECTORY,
    CODE_SUFFIXES,
    MANTLE_PACKAGES,
    MAX_SOURCE_MANIFEST_BYTES,
    SOURCE_MANIFEST_ARTIFACT,
    SourceMismatchCheck,
    SourceTreeMismatch,
    compare_source_tree,
    format_source_manifest,
    is_code_path,
    is_manifest_path,
    is_package_path,
    parse_source_manifest,
)
from protocol.release._verify import MAX_ROOT_BYTES, MAX_TARGETS_BYTES, verify_release_metadata

__all__ = [
    "BYTECODE_CACHE_DIRECTORY",
    "CODE_SUFFIXES",
    "DEFAULT_HASH_ALGORITHM",
    "HASH_ALGORITHMS",
    "MANTLE_PACKAGES",
    "MAX_LOG_PROOF_BYTES",
    "MAX_ROOT_BYTES",
    "MAX_SOURCE_MANIFEST_BYTES",
    "MAX_TARGETS_BYTES",
    "RELEASE_ENTRY_SIZE",
    "RELEASE_ENTRY_TAG",
    "SIGNER_ROLES",
    "SOURCE_MANIFEST_ARTIFACT",
    "ArtifactCheck",
    "ArtifactMismatch",
    "ArtifactSpec",
    "BadSignature",
    "BelowThreshold",
    "Expired",
    "MalformedRelease",
    "NotInLog",
    "ReleaseError",
    "ReleaseLogEntry",
    "ReleaseLogProof",
    "SourceMismatchCheck",
    "SourceTreeMismatch",
    "UnknownSigner",
    "UntrustedRoot",
    "VerifiedRelease",
    "VersionRollback",
    "WrongKey",
    "add_signer",
    "bump_root_version",
    "compare_source_tree",
    "decode_release_log_entry",
    "encode_release_log_entry",
    "format_source_manifest",
    "is_code_path",
    "is_manifest_path",
    "is_package_path",
    "metadata_from_bytes",
    "metadata_to_bytes",
    "new_root",
    "new_targets",
    "parse_source_manifest",
    "release_log_entry",
    "release_log_proof",
    "sign_metadata",
    "verify_release_in_log",
    "verify_release_metadata",
]
