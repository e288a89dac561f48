"""Publishing a release: the release signers' and the log operator's side, in one place.

What ``mantle-node release`` and ``mantle-node tlog append`` do with keys on
disk, done in memory with fresh keys, for the demo (``nodes/demo.py``) and
the tests' release kit (``tests/_release_kit.py``):

1. **Signers** -- ``signer_count`` release signers and a TUF root, signed by
   all of them, that requires ``threshold`` of them (k of n) for targets.
2. **Install directory** -- the artifacts every release names besides model
   weights are written where a node verifies them at boot: the cluster
   config, the source manifest of the Mantle packages and the node image's
   reference measurements (:data:`INSTALLED_ARTIFACTS`).
3. **Targets** -- :meth:`ReleasePublisher.targets`: those three, and one
   entry per model (naming the plaintext weights, with the model provider's
   key in its ``custom`` field when given), at a version with the release
   floor; the image measurements also go into the signed ``custom`` field.
4. **Sign, log, prove** -- :meth:`ReleasePublisher.publish`: signed by k
   signers, checked against the root like any verifier would, its entry
   appended to the transparency log, and the inclusion proof under the log's
   newest signed tree head.

The steps of 4 are public one by one (:meth:`~ReleasePublisher.sign`,
:meth:`~ReleasePublisher.verify`, :meth:`~ReleasePublisher.append_to_log`)
for callers that publish releases the signers got wrong on purpose (tests).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, Targets  # type: ignore[attr-defined]

from mantle import ReleaseDirectory
from protocol.measurement import CONFIG_ARTIFACT, IMAGE_MEASUREMENTS_ARTIFACT, model_artifact_name
from protocol.release import (
    SOURCE_MANIFEST_ARTIFACT,
    ArtifactSpec,
    ReleaseLogProof,
    VerifiedRelease,
    add_signer,
    metadata_to_bytes,
    new_root,
    new_targets,
    release_log_entry,
    release_log_proof,
    sign_metadata,
    verify_release_metadata,
)
from protocol.tlog import leaf_hash

if TYPE_CHECKING:
    # Type only: nodes.tlog imports this package (for its key files).
    from nodes.tlog import TransparencyLog

#: The artifacts a release names that are installed next to the code on every
#: node (model weights are not: they exist in plaintext only in memory).
INSTALLED_ARTIFACTS: Final = (
    CONFIG_ARTIFACT,
    SOURCE_MANIFEST_ARTIFACT,
    IMAGE_MEASUREMENTS_ARTIFACT,
)


def artifact_spec_of(data: bytes) -> ArtifactSpec:
    """Length and SHA-384 of ``data``: how a release names an artifact."""
    return ArtifactSpec(len(data), {"sha384": hashlib.sha384(data).digest()})


@dataclass(frozen=True)
class ReleaseFiles:
    """A release bundle's three files, as nodes and clients are handed them."""

    root: bytes
    targets: bytes
    log_proof: bytes
    version: int

    def write_to(self, bundle: ReleaseDirectory) -> None:
        """Write the bundle into ``bundle`` (a new directory)."""
        bundle.path.mkdir(parents=True)
        for path, data in (
            (bundle.root, self.root),
            (bundle.targets, self.targets),
            (bundle.log_proof, self.log_proof),
        ):
            path.write_bytes(data)


@dataclass(frozen=True)
class PublishedRelease:
    """A release after :meth:`ReleasePublisher.publish`: its files, what they
    verify as, and the proof of its log entry."""

    files: ReleaseFiles
    verified: VerifiedRelease
    log_proof: ReleaseLogProof


def inclusion_proof_of(log: TransparencyLog, entry: bytes) -> ReleaseLogProof:
    """The proof that ``entry`` is in ``log``, under the log's newest tree head."""
    sth = log.sth()
    inclusion = log.inclusion_proof(leaf_hash(entry), sth.tree_size)
    return release_log_proof(sth, inclusion.leaf_index, inclusion.audit_path, log.public_key)


class ReleasePublisher:
    """Release signers (k of n) with their root, a transparency log, and the
    install directory of the artifacts every release names (module docstring)."""

    def __init__(
        self,
        *,
        install_root: Path,
        log: TransparencyLog,
        config: bytes,
        source_manifest: bytes,
        image_measurements: bytes,
        signer_count: int,
        threshold: int,
        root_expires: datetime,
    ) -> None:
        if not 1 <= threshold <= signer_count:
            raise ValueError("the threshold must be between 1 and the number of signers")
        self.signers: tuple[CryptoSigner, ...] = tuple(
            CryptoSigner.generate_ed25519() for _ in range(signer_count)
        )
        self.threshold = threshold
        root_md = new_root(expires=root_expires, targets_threshold=threshold)
        for signer in self.signers:
            add_signer(root_md, signer.public_key, "root")
            add_signer(root_md, signer.public_key, "targets")
        for signer in self.signers:
            sign_metadata(root_md, signer)
        self.root = metadata_to_bytes(root_md)
        self.log = log
        self.install_root = install_root
        self.config = config
        self.source_manifest = source_manifest
        self.image_measurements = image_measurements
        installed = dict(
            zip(INSTALLED_ARTIFACTS, (config, source_manifest, image_measurements), strict=True)
        )
        for name, data in installed.items():
            (install_root / name).parent.mkdir(parents=True, exist_ok=True)
            (install_root / name).write_bytes(data)

    def targets(
        self,
        version: int,
        *,
        expires: datetime,
        min_version: int,
        models: Mapping[str, ArtifactSpec],
        model_providers: Mapping[str, bytes] | None = None,
    ) -> Metadata[Targets]:
        """Unsigned targets of release ``version``: the installed artifacts, the
        image measurements, ``models`` (model id -> the plaintext weights'
        spec) with their providers' keys, and the floor ``min_version``."""
        artifacts = {
            CONFIG_ARTIFACT: artifact_spec_of(self.config),
            SOURCE_MANIFEST_ARTIFACT: artifact_spec_of(self.source_manifest),
        }
        for model_id, spec in models.items():
            artifacts[model_artifact_name(model_id)] = spec
        return new_targets(
            version=version,
            expires=expires,
            artifacts=artifacts,
            min_version=min_version,
            image_measurements=self.image_measurements,
            model_providers=model_providers,
        )

    def sign(self, targets_md: Metadata[Targets]) -> bytes:
        """``targets_md`` signed by the threshold of signers (the first k)."""
        for signer in self.signers[: self.threshold]:
            sign_metadata(targets_md, signer)
        return metadata_to_bytes(targets_md)

    def verify(self, targets: bytes, *, now: datetime) -> VerifiedRelease:
        """``targets`` verified against this publisher's own root at ``now``."""
        return verify_release_metadata(
            self.root, targets, trusted_root=self.root, now=now, min_version=0
        )

    def append_to_log(self, entry: bytes) -> ReleaseLogProof:
        """Append ``entry`` to the log; the proof of its inclusion."""
        self.log.append(entry)
        return inclusion_proof_of(self.log, entry)

    def publish(self, targets_md: Metadata[Targets], *, now: datetime) -> PublishedRelease:
        """Sign ``targets_md``, verify it, log its entry and prove the inclusion."""
        targets = self.sign(targets_md)
        verified = self.verify(targets, now=now)
        proof = self.append_to_log(release_log_entry(verified))
        files = ReleaseFiles(self.root, targets, proof.to_json_bytes(), verified.version)
        return PublishedRelease(files, verified, proof)
