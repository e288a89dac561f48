"""The client's trust configuration: the pins it loads, and the releases it accepts.

A client trusts three things without verifying them -- the attestation PKI's
root, the release root and the transparency log's key -- and reads them from a
pins directory it is given (by the user, or by the image it runs in), never
from the release bundle it then verifies: a pin read from the bundle it checks
pins nothing. With those pins and the highest release floor it has verified
before (:mod:`mantle.trust_state`, on its own disk), :func:`client_release_view`
decides whether a bundle is a release it may send prompts to.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from mantle._bundle import ReleaseDirectory
from mantle._files import KeyFileError, read_bounded_file, read_metadata_file
from mantle.trust_state import TrustStateFile
from protocol.attestation import TrustAnchor
from protocol.release import (
    MAX_LOG_PROOF_BYTES,
    MAX_ROOT_BYTES,
    MAX_TARGETS_BYTES,
    ReleaseLogProof,
    VerifiedRelease,
    verify_release_in_log,
    verify_release_metadata,
)

#: Files of a pins directory: what nodes and clients trust, handed to them apart
#: from any release bundle.
ATTESTATION_ROOT_PIN: Final = "attestation-root.pem"
RELEASE_ROOT_PIN: Final = "release-root.json"
LOG_KEY_PIN: Final = "log-key.pub.pem"
#: Upper bound on a PEM pin (a certificate or a public key).
MAX_PEM_PIN_BYTES: Final = 16 * 1024


@dataclass(frozen=True)
class TrustPins:
    """The three things a client (and a node) trusts without verifying them."""

    #: The attestation PKI's root certificate (AWS's Nitro root; in development
    #: the simulated cloud's).
    attestation_root: TrustAnchor
    #: The release root metadata: who signs releases, and how many must.
    release_root: bytes
    #: The transparency log's Ed25519 public key (raw).
    log_public_key: bytes


def load_pins(pins: Path) -> TrustPins:
    """Read the pins from the directory ``pins``.

    A missing or oversized root is a :class:`~protocol.release.MalformedRelease`,
    a missing or unusable log key a :class:`KeyFileError`; nothing falls back
    to anything a release bundle carries.
    """
    root_pem = read_metadata_file(
        pins / ATTESTATION_ROOT_PIN, MAX_PEM_PIN_BYTES, "attestation root"
    )
    return TrustPins(
        attestation_root=TrustAnchor.from_pem(root_pem),
        release_root=read_metadata_file(pins / RELEASE_ROOT_PIN, MAX_ROOT_BYTES, "release root"),
        log_public_key=_load_log_key_pin(pins / LOG_KEY_PIN),
    )


def _load_log_key_pin(path: Path) -> bytes:
    """The 32 raw bytes of the log's Ed25519 public key, from a public PEM file."""
    data = read_bounded_file(path, MAX_PEM_PIN_BYTES, "log key", error=KeyFileError)
    return load_log_key_pem(data, where=str(path))


def load_log_key_pem(data: bytes, *, where: str = "the log key") -> bytes:
    """The 32 raw bytes of the log's Ed25519 public key in the PEM ``data``;
    :class:`KeyFileError` if it is not one."""
    key: PublicKeyTypes | None = None
    with contextlib.suppress(ValueError, TypeError):
        key = load_pem_public_key(data)
    if key is None:
        raise KeyFileError(f"{where} is not a PEM public key")
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{where} is not an Ed25519 key; logs sign with Ed25519")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def client_release_view(
    bundle: ReleaseDirectory, pins: TrustPins, now: datetime, state: TrustStateFile
) -> VerifiedRelease:
    """What a client checks before trusting a release: signatures against its
    pinned root, expiry, inclusion in the log under the pinned log key -- pins
    it loaded itself, never ones the bundle brought along -- and a version at
    or above the highest release floor it has ever verified (``state``, on the
    client's own disk), which then rises to this release's floor."""
    verified, _ = verify_release_bytes(
        read_metadata_file(bundle.root, MAX_ROOT_BYTES, "root metadata"),
        read_metadata_file(bundle.targets, MAX_TARGETS_BYTES, "targets metadata"),
        read_metadata_file(bundle.log_proof, MAX_LOG_PROOF_BYTES, "log proof"),
        pins=pins,
        now=now,
        floor=state.load().release_floor,
    )
    state.raise_floor(verified.min_version)
    return verified


def verify_release_bytes(
    root: bytes, targets: bytes, log_proof: bytes, *, pins: TrustPins, now: datetime, floor: int
) -> tuple[VerifiedRelease, ReleaseLogProof]:
    """The checks of :func:`client_release_view` on a bundle's three files as
    bytes (as ``/v1/mantle/release`` hands them over), against the floor
    ``floor``; stores nothing (the caller raises its floor once everything
    else it checks passed too). Returns the release and its verified log proof."""
    verified = verify_release_metadata(
        root, targets, trusted_root=pins.release_root, now=now, min_version=floor
    )
    proof = ReleaseLogProof.from_json_bytes(log_proof)
    verify_release_in_log(verified, proof, pins.log_public_key)
    return verified, proof
