"""Building and signing release metadata (the operator's side).

Signing keys never reach a node: operators hold them in files (or tokens)
and sign with any ``securesystemslib`` signer, e.g. ``CryptoSigner`` loaded
from a PKCS#8 PEM file.
"""

from __future__ import annotations

import contextlib
import hashlib
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

from protocol.measurement import (
    IMAGE_MEASUREMENTS_ARTIFACT,
    image_measurements_object,
    model_artifact_name,
    parse_image_measurements,
)
from protocol.release._errors import MalformedRelease
from protocol.release._model import ArtifactSpec

#: The field of the signed targets metadata that carries the release floor
#: (python-tuf keeps fields it does not know in ``signed``, so the signatures,
#: the release digest and the log entry all cover it).
MIN_VERSION_FIELD = "min_version"
#: The field of a target entry that python-tuf reserves for applications.
CUSTOM_FIELD = "custom"
#: In a model artifact's ``custom`` field: the model provider's X25519 static
#: public key (hex), the only key a keys node accepts that model's data keys from.
PROVIDER_STATIC_FIELD = "provider_static"
PROVIDER_STATIC_BYTES = 32

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
    *,
    version: int,
    expires: datetime,
    artifacts: Mapping[str, ArtifactSpec],
    min_version: int,
    image_measurements: bytes | None = None,
    model_providers: Mapping[str, bytes] | None = None,
) -> Metadata[Targets]:
    """Unsigned targets metadata listing ``artifacts`` at ``version``.

    ``min_version``: the cluster's release floor the signers publish with this
    release (0 to publish none; never above ``version``). ``image_measurements``:
    the node image's ``nitro-tpm-pcr-compute`` output; it is listed as the
    ``image/pcr-measurements.json`` artifact, with its parsed values in the
    entry's ``custom`` field for verifiers that hold only metadata.
    ``model_providers``: per listed model, the model provider's 32-byte X25519
    static public key, carried in that model artifact's ``custom`` field.
    """
    if version < 1:
        raise ValueError("release version must be at least 1")
    if type(min_version) is not int or not 0 <= min_version <= version:
        raise ValueError("min_version must be between 0 and the release version")
    targets = {
        name: TargetFile(spec.length, spec.hex_hashes(), name) for name, spec in artifacts.items()
    }
    if image_measurements is not None:
        custom = image_measurements_object(parse_image_measurements(image_measurements))
        spec = ArtifactSpec(
            len(image_measurements), {"sha384": hashlib.sha384(image_measurements).digest()}
        )
        listed = artifacts.get(IMAGE_MEASUREMENTS_ARTIFACT)
        if listed is not None and (
            listed.length != spec.length or listed.hashes.get("sha384") != spec.hashes["sha384"]
        ):
            raise ValueError(f"{IMAGE_MEASUREMENTS_ARTIFACT} is listed with other content")
        targets[IMAGE_MEASUREMENTS_ARTIFACT] = TargetFile(
            spec.length,
            (listed or spec).hex_hashes(),
            IMAGE_MEASUREMENTS_ARTIFACT,
            unrecognized_fields={CUSTOM_FIELD: custom},
        )
    for model_id, provider_static in (model_providers or {}).items():
        name = model_artifact_name(model_id)
        if name not in targets:
            raise ValueError("a model provider is named for a model the release does not list")
        if type(provider_static) is not bytes or len(provider_static) != PROVIDER_STATIC_BYTES:
            raise ValueError("a model provider's static key is 32 bytes")
        listed_model = targets[name]
        targets[name] = TargetFile(
            listed_model.length,
            listed_model.hashes,
            name,
            unrecognized_fields={CUSTOM_FIELD: {PROVIDER_STATIC_FIELD: provider_static.hex()}},
        )
    if image_measurements is None and IMAGE_MEASUREMENTS_ARTIFACT in artifacts:
        raise ValueError(f"{IMAGE_MEASUREMENTS_ARTIFACT} needs its content (image_measurements)")
    return Metadata(
        Targets(
            version=version,
            expires=expires,
            targets=targets,
            unrecognized_fields={MIN_VERSION_FIELD: min_version},
        )
    )


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
