"""Real releases for tests: TUF metadata signed by real keys, appended to a real log.

Builds what ``mantle-node release`` and ``mantle-node tlog append`` produce,
with the project's own builders (``protocol.release``) and transparency log
(``nodes.tlog``), so boot and key-custody tests exercise the real checks.

A release names the code that runs (the source manifest of the installed
Mantle packages) and the node image it runs on (by default the simulated image
derived from that code, which is what a default ``SimulatedNitroTPM`` boots),
so a node booted from it on a default simulated TPM passes every check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, Targets  # type: ignore[attr-defined]

from nodes.boot import BootInputs
from nodes.release import running_source_manifest
from nodes.store import SqliteStore
from nodes.tlog import TransparencyLog
from protocol.measurement import CONFIG_ARTIFACT, IMAGE_MEASUREMENTS_ARTIFACT, model_artifact_name
from protocol.release import (
    SOURCE_MANIFEST_ARTIFACT,
    ArtifactSpec,
    VerifiedRelease,
    add_signer,
    encode_release_log_entry,
    metadata_to_bytes,
    new_root,
    new_targets,
    release_log_entry,
    release_log_proof,
    sign_metadata,
    verify_release_metadata,
)
from protocol.tlog import leaf_hash
from simulations.clock import ManualClock
from simulations.nitrotpm import (
    NodeImage,
    SimulatedNitroTPM,
    image_measurements_file,
    running_image,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
CODE_ARTIFACT = SOURCE_MANIFEST_ARTIFACT


def spec_of(data: bytes) -> ArtifactSpec:
    return ArtifactSpec(len(data), {"sha384": hashlib.sha384(data).digest()})


@dataclass(frozen=True)
class ReleaseFiles:
    root: bytes
    targets: bytes
    log_proof: bytes
    version: int


@dataclass
class ReleaseKit:
    """Signers (threshold 2 of 3), a pinned root, a log, and an install directory.

    ``source_manifest`` (default: the running tree's) and ``image`` (default: the
    simulated image of the running tree) are what every release names.
    """

    install_root: Path
    threshold: int = 2
    root_expires: timedelta = timedelta(days=365)
    signers: list[CryptoSigner] = field(default_factory=list)
    root: bytes = b""
    log: TransparencyLog | None = None
    log_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    source_manifest: bytes = field(default_factory=running_source_manifest)
    image: NodeImage = field(default_factory=running_image)

    def __post_init__(self) -> None:
        self.signers = [CryptoSigner.generate_ed25519() for _ in range(3)]
        root_md = new_root(expires=NOW + self.root_expires, targets_threshold=self.threshold)
        for signer in self.signers:
            add_signer(root_md, signer.public_key, "root")
            add_signer(root_md, signer.public_key, "targets")
        for signer in self.signers:
            sign_metadata(root_md, signer)
        self.root = metadata_to_bytes(root_md)
        self.log = TransparencyLog(
            SqliteStore.in_memory(),
            clock=ManualClock(int(NOW.timestamp() * 1000)),
            signing_key=self.log_key,
        )
        self.config = b'{"cluster": "test", "replicas": 2}\n'
        self.code = self.source_manifest
        self.image_measurements = image_measurements_file(self.image)
        for name, data in (
            (CONFIG_ARTIFACT, self.config),
            (CODE_ARTIFACT, self.code),
            (IMAGE_MEASUREMENTS_ARTIFACT, self.image_measurements),
        ):
            (self.install_root / name).parent.mkdir(parents=True, exist_ok=True)
            (self.install_root / name).write_bytes(data)

    @property
    def log_public_key(self) -> bytes:
        assert self.log is not None
        return self.log.public_key

    def artifacts(self, models: Mapping[str, bytes]) -> dict[str, ArtifactSpec]:
        specs = {CONFIG_ARTIFACT: spec_of(self.config), CODE_ARTIFACT: spec_of(self.code)}
        for model_id, weights in models.items():
            specs[model_artifact_name(model_id)] = spec_of(weights)
        return specs

    def publish(
        self,
        version: int,
        *,
        models: Mapping[str, bytes] | None = None,
        expires: datetime | None = None,
        signers: Sequence[CryptoSigner] | None = None,
        logged: bool = True,
        min_version: int = 0,
        model_providers: Mapping[str, bytes] | None = None,
        with_image: bool = True,
        mutate: Callable[[Metadata[Targets]], None] | None = None,
    ) -> ReleaseFiles:
        """Sign (by the threshold, or by ``signers``) and log (unless ``logged=False``).

        ``min_version``: the release floor published with it. ``with_image=False``
        publishes a release that names no node image (which no policy admits).
        ``mutate`` edits the targets before they are signed (a release the
        signers got wrong).
        """
        targets_md = new_targets(
            version=version,
            expires=expires or NOW + timedelta(days=30),
            artifacts=self.artifacts(models or {}),
            min_version=min_version,
            image_measurements=self.image_measurements if with_image else None,
            model_providers=model_providers,
        )
        if mutate is not None:
            mutate(targets_md)
        for signer in self.signers[: self.threshold]:
            sign_metadata(targets_md, signer)
        # The release digest covers the signed payload, not the signatures, so
        # the log entry is the same whoever signed; re-sign afterwards if asked.
        verified = verify_release_metadata(
            self.root,
            metadata_to_bytes(targets_md),
            trusted_root=self.root,
            now=NOW,
            min_version=0,
        )
        entry = release_log_entry(verified)
        if not logged:
            # Log something else, and hand out that entry's proof.
            entry = encode_release_log_entry(version + 10_000, hashlib.sha384(entry).digest())
        assert self.log is not None
        self.log.append(entry)
        sth = self.log.sth()
        inclusion = self.log.inclusion_proof(leaf_hash(entry), sth.tree_size)
        proof = release_log_proof(
            sth, inclusion.leaf_index, inclusion.audit_path, self.log_public_key
        ).to_json_bytes()
        if signers is not None:
            targets_md.signatures.clear()
            for signer in signers:
                sign_metadata(targets_md, signer)
        return ReleaseFiles(
            root=self.root,
            targets=metadata_to_bytes(targets_md),
            log_proof=proof,
            version=version,
        )

    def boot_inputs(self, files: ReleaseFiles, model_id: str | None, state_dir: Path) -> BootInputs:
        """What a node boots from: ``files`` with this kit's pins and install dir,
        and the node's own ``state_dir`` (see :meth:`node_state_dir`)."""
        return BootInputs(
            root_metadata=files.root,
            targets_metadata=files.targets,
            log_proof=files.log_proof,
            trusted_root=self.root,
            log_public_key=self.log_public_key,
            install_root=self.install_root,
            state_dir=state_dir,
            model_id=model_id,
        )

    def node_state_dir(self, tpm: SimulatedNitroTPM) -> Path:
        """The persistent state directory of the machine ``tpm`` sits in.

        A node's state goes with its TPM (the release counter's binding names a
        counter on that TPM), so each simulated machine gets its own, kept
        next to this kit's install directory.
        """
        return self.install_root.parent / f"{self.install_root.name}.node-state" / tpm.instance_id

    def verified(self, files: ReleaseFiles) -> VerifiedRelease:
        return verify_release_metadata(
            files.root, files.targets, trusted_root=self.root, now=NOW, min_version=0
        )
