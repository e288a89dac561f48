"""Building and signing release metadata (the operator's side).

Signing keys never reach a node: operators hold them in files (or tokens)
and sign with any ``securesystemslib`` signer, e.g. ``CryptoSigner`` loaded
from a PKCS#8 PEM file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from securesystemslib.signer import Key, Signer  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    Role,
    Root,
    TargetFile,
    Targets,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from protocol.release._errors import MalformedRelease
from protocol.release._model import ArtifactSpec

SIGNER_ROLES = ("root", "targets")


def new_root(
    *, expires: datetime, targets_threshold: int, root_threshold: int = 1, version: int = 1
) -> Metadata[Root]:
    """An unsigned root with no keys yet: ``targets`` needs ``targets_threshold``
    release signatures (k of n), ``root`` needs ``root_threshold``."""
    if targets_threshold < 1 or root_threshold < 1:
        raise ValueError("thresholds must be at least 1")
    roles = {
        "root": Role([], root_threshold),
        "targets": Role([], targets_threshold),
        # TUF roots must name these roles; releases use neither.
        "snapshot": Role([], 1),
        "timestamp": Role([], 1),
    }
    return Metadata(Root(version=version, expires=expires, roles=roles, consistent_snapshot=False))


def add_signer(root_md: Metadata[Root], key: Key, role: str) -> None:
    """Name ``key`` as a signer for ``role`` (``"targets"`` = release signer).

    Changing the root invalidates its signatures, so they are dropped.
    """
    if role not in SIGNER_ROLES:
        raise ValueError(f"role must be one of {SIGNER_ROLES}")
    root_md.signed.add_key(key, role)
    root_md.signatures.clear()


def bump_root_version(root_md: Metadata[Root], expires: datetime) -> None:
    """Start a rotation: the next root must carry signatures from a threshold
    of both this root's keys and the new root's keys."""
    root_md.signed.version += 1
    root_md.signed.expires = expires
    root_md.signatures.clear()


def new_targets(
    *, version: int, expires: datetime, artifacts: Mapping[str, ArtifactSpec]
) -> Metadata[Targets]:
    """Unsigned targets metadata listing ``artifacts`` at ``version``."""
    if version < 1:
        raise ValueError("release version must be at least 1")
    targets = {
        name: TargetFile(spec.length, spec.hex_hashes(), name) for name, spec in artifacts.items()
    }
    return Metadata(Targets(version=version, expires=expires, targets=targets))


def sign_metadata(md: Metadata[Any], signer: Signer) -> str:
    """Add ``signer``'s signature (keeping others); return its key id."""
    signature = md.sign(signer, append=True)
    keyid: str = signature.keyid
    return keyid


def metadata_to_bytes(md: Metadata[Any]) -> bytes:
    """Human-readable JSON for files operators pass around and review."""
    data: bytes = JSONSerializer(compact=False).serialize(md)
    return data


def metadata_from_bytes(data: bytes, role: str) -> Metadata[Any]:
    md: Metadata[Any] | None = None
    with contextlib.suppress(DeserializationError):
        md = Metadata.from_bytes(data)
    if md is None:
        # Raised outside the handler: python-tuf's exceptions quote what they refuse.
        raise MalformedRelease(f"{role} metadata does not parse as TUF metadata")
    if md.signed.type != role:
        raise MalformedRelease(f"expected {role} metadata, got {md.signed.type}")
    return md
