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
from nodes.release import (
    ReleaseFiles,
    ReleasePublisher,
    artifact_spec_of,
    running_source_manifest,
)
from nodes.store import SqliteStore
from nodes.tlog import TransparencyLog
from protocol.measurement import IMAGE_MEASUREMENTS_ARTIFACT
from protocol.release import (
    SOURCE_MANIFEST_ARTIFACT,
    ArtifactSpec,
    VerifiedRelease,
    encode_release_log_entry,
    metadata_to_bytes,
    release_log_entry,
    sign_metadata,
    verify_release_metadata,
)
from simulations.clock import ManualClock
from simulations.nitrotpm import (
    NodeImage,
    SimulatedNitroTPM,
    image_measurements_file,
    running_image,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
CODE_ARTIFACT = SOURCE_MANIFEST_ARTIFACT
spec_of = artifact_spec_of

__all__ = ["CODE_ARTIFACT", "NOW", "ReleaseFiles", "ReleaseKit", "spec_of"]


@dataclass
class ReleaseKit:
    """Signers (threshold 2 of 3), a pinned root, a log, and an install directory.

    ``source_manifest`` (default: the running tree's) and ``image`` (default: the
    simulated image of the running tree) are what every release names. The
    signing, logging and installing are :class:`nodes.release.ReleasePublisher`'s
    (the demo's too); what this kit adds are the knobs of :meth:`publish` that
    publish releases the signers got wrong.
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
    #: The release's ``config/cluster.json`` (the daemon reads its attestation trust).
    config: bytes = b'{"cluster": "test", "replicas": 2}\n'

    def __post_init__(self) -> None:
        self.log = TransparencyLog(
            SqliteStore.in_memory(),
            clock=ManualClock(int(NOW.timestamp() * 1000)),
            signing_key=self.log_key,
        )
        self.code = self.source_manifest
        self.image_measurements = image_measurements_file(self.image)
        self.publisher = ReleasePublisher(
            install_root=self.install_root,
            log=self.log,
            config=self.config,
            source_manifest=self.code,
            image_measurements=self.image_measurements,
            signer_count=3,
            threshold=self.threshold,
            root_expires=NOW + self.root_expires,
        )
        self.signers = list(self.publisher.signers)
        self.root = self.publisher.root

    @property
    def log_public_key(self) -> bytes:
        assert self.log is not None
        return self.log.public_key

    def publish(
        self,
        version: int,
        *,
        models: Mapping[str, bytes | ArtifactSpec] | None = None,
        expires: datetime | None = None,
        signers: Sequence[CryptoSigner] | None = None,
        logged: bool = True,
        min_version: int = 0,
        model_providers: Mapping[str, bytes] | None = None,
        with_image: bool = True,
        mutate: Callable[[Metadata[Targets]], None] | None = None,
    ) -> ReleaseFiles:
        """Sign (by the threshold, or by ``signers``) and log (unless ``logged=False``).

        ``models``: model id -> its weights (or their spec, for weights held in
        a file). ``min_version``: the release floor published with it.
        ``with_image=False`` publishes a release that names no node image (which
        no policy admits). ``mutate`` edits the targets before they are signed
        (a release the signers got wrong).
        """
        targets_md = self.publisher.targets(
            version,
            expires=expires or NOW + timedelta(days=30),
            min_version=min_version,
            models={
                model_id: weights if isinstance(weights, ArtifactSpec) else spec_of(weights)
                for model_id, weights in (models or {}).items()
            },
            model_providers=model_providers,
        )
        if not with_image:
            # The same targets as if no image had been given to new_targets.
            del targets_md.signed.targets[IMAGE_MEASUREMENTS_ARTIFACT]
        if mutate is not None:
            mutate(targets_md)
        if logged:
            files = self.publisher.publish(targets_md, now=NOW).files
        else:
            # Log something else, and hand out that entry's proof.
            targets = self.publisher.sign(targets_md)
            entry = release_log_entry(self.publisher.verify(targets, now=NOW))
            other = encode_release_log_entry(version + 10_000, hashlib.sha384(entry).digest())
            proof = self.publisher.append_to_log(other).to_json_bytes()
            files = ReleaseFiles(self.root, targets, proof, version)
        if signers is not None:
            # The release digest covers the signed payload, not the signatures,
            # so the log entry is the same whoever signed: re-sign afterwards.
            targets_md.signatures.clear()
            for signer in signers:
                sign_metadata(targets_md, signer)
            resigned = metadata_to_bytes(targets_md)
            files = ReleaseFiles(files.root, resigned, files.log_proof, version)
        return files

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
