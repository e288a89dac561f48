"""The development release: built, signed and logged on the fly, as ``make demo`` does.

Three release signers (two must sign) with their root; targets naming the
source manifest of the code this process runs, the simulated node image's
PCR 4, 7 and 12 (the image built from that very tree, which every node's
simulated firmware measures), the cluster config and the one model's
plaintext digest, with the model provider's static key named for it (so the
keys node accepts the provider's import, and nobody else's), and the floor
v1; appended to the transparency log at ``tlog.sqlite``. The pins -- the
simulated PKI's root, the release root and the log key -- go to ``pins/``,
and the release is then read back from its bundle and verified against them
like any client would (:func:`mantle.client_release_view`): what the nodes
are measured against is what the files say, not what this process meant.

The scripted engine has no weights: its model entry names a fixed marker
(:data:`SCRIPTED_MODEL_MARKER`), so the model register still commits to
"the scripted engine serving this model id".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mantle import (
    ATTESTATION_ROOT_PIN,
    LOG_KEY_PIN,
    RELEASE_ROOT_PIN,
    TrustPins,
    client_release_view,
    load_pins,
)
from mantle.trust_state import TrustStateFile
from nodes.clock import TrioClock
from nodes.daemon.tpm import ReleaseAttestationTrust
from nodes.devcluster._layout import ClusterLayout
from nodes.release import (
    ReleaseDirectory,
    ReleasePublisher,
    artifact_spec_of,
    hash_artifact,
    running_source_manifest,
    write_new_file,
)
from nodes.store import SqliteStore
from nodes.tlog import TransparencyLog
from protocol.attestation import TrustAnchor
from protocol.release import ArtifactSpec, VerifiedRelease
from simulations.nitrotpm import SimulatedNitroPKI, image_measurements_file, running_image

RELEASE_VERSION: Final = 1
RELEASE_FLOOR: Final = 1
SIGNER_COUNT: Final = 3
SIGNER_THRESHOLD: Final = 2
ROOT_VALIDITY: Final = timedelta(days=365)
TARGETS_VALIDITY: Final = timedelta(days=30)
#: What the scripted engine's model entry names in place of weights.
SCRIPTED_MODEL_MARKER: Final = b"mantle-dev/scripted-engine/v1\x00no weights\n"


@dataclass(frozen=True)
class DevRelease:
    """The published release as the nodes receive it, and as it verified."""

    bundle: ReleaseDirectory
    install_root: Path
    pins_dir: Path
    pins: TrustPins
    verified: VerifiedRelease
    model_id: str


def cluster_config(model_id: str, pki: SimulatedNitroPKI) -> bytes:
    """The release's cluster config (measured into every node's PCR 14): its
    model, and the attestation root its nodes accept (this run's simulated
    PKI; a node refuses any root its release does not name)."""
    trust = ReleaseAttestationTrust(
        nitro_roots=frozenset({TrustAnchor.from_der(pki.root_der).sha256}),
        tpm2_attestation_keys=frozenset(),
    )
    config = {
        "cluster": "dev",
        "models": [model_id],
        "simulated_tpm": True,
        "attestation_trust": trust.table(),
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def model_artifact(model: Path | None) -> ArtifactSpec:
    """The release entry for the model: the GGUF's length and SHA-384, or the
    scripted engine's marker when there are no weights (``None``)."""
    if model is None:
        return artifact_spec_of(SCRIPTED_MODEL_MARKER)
    return hash_artifact(model, ["sha384"])


def build_dev_release(
    layout: ClusterLayout,
    *,
    model_id: str,
    model: ArtifactSpec,
    provider_static: bytes,
    pki: SimulatedNitroPKI,
    now: datetime,
) -> DevRelease:
    """Sign, log and publish release v1 into ``layout``; write the pins; verify it back."""
    log_key = Ed25519PrivateKey.generate()
    store = SqliteStore(layout.tlog)
    try:
        log = TransparencyLog(store, clock=TrioClock(), signing_key=log_key)
        publisher = ReleasePublisher(
            install_root=layout.install_root,
            log=log,
            config=cluster_config(model_id, pki),
            source_manifest=running_source_manifest(),
            image_measurements=image_measurements_file(running_image()),
            signer_count=SIGNER_COUNT,
            threshold=SIGNER_THRESHOLD,
            root_expires=now + ROOT_VALIDITY,
        )
        targets = publisher.targets(
            RELEASE_VERSION,
            expires=now + TARGETS_VALIDITY,
            min_version=RELEASE_FLOOR,
            models={model_id: model},
            model_providers={model_id: provider_static},
        )
        published = publisher.publish(targets, now=now)
    finally:
        store.close()
    bundle = ReleaseDirectory(layout.release_dir)
    published.files.write_to(bundle)
    pins = layout.pins_dir
    pins.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_new_file(pins / ATTESTATION_ROOT_PIN, pki.root_pem(), 0o644)
    write_new_file(pins / RELEASE_ROOT_PIN, publisher.root, 0o644)
    log_public = log_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    write_new_file(pins / LOG_KEY_PIN, log_public, 0o644)
    (pins / "SIMULATED").write_text(
        "The attestation root here is a SIMULATED cloud PKI created by `mantle-node dev`"
        " for this run (development only): documents chaining to it prove nothing"
        " about hardware.\n"
    )
    loaded = load_pins(pins)
    verified = client_release_view(bundle, loaded, now, TrustStateFile(layout.client_state))
    return DevRelease(
        bundle=bundle,
        install_root=layout.install_root,
        pins_dir=pins,
        pins=loaded,
        verified=verified,
        model_id=model_id,
    )
