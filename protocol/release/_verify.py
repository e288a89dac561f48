"""Verification of release metadata (TUF root + targets) on python-tuf's Metadata API.

Order of checks, cheapest and most fundamental first (verify before use):

1. sizes, then parsing, role types;
2. the root: each role names distinct public keys of supported types (a
   threshold counts keys, not keyids); signed by a threshold of its own root
   keys and either identical to the pinned root or its direct successor
   signed by a threshold of the pinned root's keys too (TUF root rotation,
   one step); never an older version than the pinned one. There is always a
   pinned root: a root that vouches only for itself proves nothing but that
   whoever wrote the bundle holds its keys;
3. root expiry;
4. targets signed by the root's ``targets`` threshold (``Root.verify_delegate``);
5. targets expiry, then version against the caller's trusted minimum;
6. the release floor the signers published (``min_version``, present, at most
   the version);
7. every listed artifact: safe name, length, supported hashes only; the node
   image's reference measurements (``image/pcr-measurements.json``) carry
   their parsed values in the entry's ``custom`` field, strictly checked.

Each refusal is a :class:`~protocol.release.ReleaseError` subclass naming the check.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)
from securesystemslib.exceptions import UnverifiedSignatureError

# Both packages re-export these names without __all__; mypy --strict reads
# that as private, hence the ignores.
from securesystemslib.signer import Signature, SSlibKey  # type: ignore[attr-defined]
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Targets  # type: ignore[attr-defined]
from tuf.api.serialization import DeserializationError, SerializationError
from tuf.api.serialization.json import CanonicalJSONSerializer

from protocol.measurement import (
    IMAGE_MEASUREMENTS_ARTIFACT,
    MODEL_ARTIFACT_PREFIX,
    MODEL_ARTIFACT_SUFFIX,
    ImageMeasurementsError,
    image_measurements_from_object,
)
from protocol.release._build import (
    CUSTOM_FIELD,
    MIN_VERSION_FIELD,
    PROVIDER_STATIC_BYTES,
    PROVIDER_STATIC_FIELD,
)
from protocol.release._errors import (
    BadSignature,
    BelowThreshold,
    Expired,
    MalformedRelease,
    UnknownSigner,
    UntrustedRoot,
    VersionRollback,
)
from protocol.release._model import HASH_ALGORITHMS, ArtifactSpec, VerifiedRelease

MAX_ROOT_BYTES = 512 * 1024
MAX_TARGETS_BYTES = 8 * 1024 * 1024
MAX_ARTIFACTS = 4096
MAX_ARTIFACT_NAME = 255

# Key types a release may be signed with. Anything else (KMS or keyless
# schemes) would need a network or a library the node does not carry.
SUPPORTED_KEY_TYPES = frozenset({"ed25519", "ecdsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384"})

# Artifact names become paths under an install directory: plain relative
# POSIX paths of safe characters, no empty, "." or ".." components.
_NAME_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")

_canonical = CanonicalJSONSerializer()


def _parse(data: bytes, role: str, limit: int) -> Metadata[Any]:
    if not isinstance(data, bytes):
        raise MalformedRelease(f"{role} metadata must be bytes")
    if len(data) > limit:
        raise MalformedRelease(f"{role} metadata is {len(data)} bytes, limit {limit}")
    md: Metadata[Any] | None = None
    with contextlib.suppress(DeserializationError):
        md = Metadata.from_bytes(data)
    if md is None:
        # Raised outside the handler: python-tuf's exceptions quote the field
        # values they refuse, and __context__ would keep them.
        raise MalformedRelease(f"{role} metadata does not parse as TUF metadata")
    if md.signed.type != role:
        raise MalformedRelease(f"expected {role} metadata, got {md.signed.type}")
    return md


def _signed_bytes(md: Metadata[Any], role: str) -> bytes:
    with contextlib.suppress(SerializationError):
        return _canonical.serialize(md.signed)
    raise MalformedRelease(f"{role} metadata has no canonical form")


def _public_key_identity(key: SSlibKey, label: str, role_name: str) -> bytes:
    """The key's DER SubjectPublicKeyInfo: one value per public key, however
    its ``keyval`` is spelled (hex case, PEM line breaks) or its keyid chosen."""
    public = key.keyval.get("public")
    crypto_key: Any = None
    if isinstance(public, str):
        with contextlib.suppress(TypeError, ValueError, UnsupportedAlgorithm):
            if key.keytype == "ed25519":
                crypto_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
            else:
                crypto_key = load_pem_public_key(public.encode("utf-8"))
    if crypto_key is None:
        # Outside the handler, and without the keyid: both come from the
        # metadata being judged.
        raise MalformedRelease(f"{label} names a {role_name} key without a usable public key")
    identity: bytes = crypto_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return identity


def _check_root_keys(root: Root, label: str) -> None:
    for role_name in ("root", "targets"):
        role = root.roles[role_name]
        if not role.keyids:
            raise MalformedRelease(f"{label} names no keys for the {role_name} role")
        # python-tuf counts a threshold by keyid, and a keyid is only a label
        # the root chooses: one key listed under two keyids would let its
        # holder sign twice and meet a threshold of 2 alone. A threshold is
        # k distinct keys, so a role may name each public key once.
        # Messages count keys instead of naming keyids: a keyid is text the
        # metadata under judgement chose.
        keyid_by_identity: dict[bytes, str] = {}
        for keyid in role.keyids:
            key = root.keys.get(keyid)
            if key is None:
                raise MalformedRelease(f"{label} names a {role_name} key it does not list")
            if not isinstance(key, SSlibKey) or key.keytype not in SUPPORTED_KEY_TYPES:
                raise MalformedRelease(f"{label} names a {role_name} key of an unsupported type")
            identity = _public_key_identity(key, label, role_name)
            twin = keyid_by_identity.setdefault(identity, keyid)
            if twin != keyid:
                raise MalformedRelease(
                    f"{label} names one public key twice for the {role_name} role "
                    "(under two keyids); a threshold counts distinct keys"
                )


def _threshold_failure(
    delegator: Root,
    role_name: str,
    label: str,
    payload: bytes,
    signatures: Mapping[str, Signature],
    detail: str = "",
) -> BelowThreshold:
    """Describe why ``signatures`` miss the threshold, as the most specific error."""
    role = delegator.roles[role_name]
    valid, unknown, bad = 0, [], []
    for keyid, signature in signatures.items():
        if keyid not in role.keyids:
            unknown.append(keyid)
            continue
        try:
            delegator.keys[keyid].verify_signature(signature, payload)
            valid += 1
        except UnverifiedSignatureError:
            bad.append(keyid)
    error_type: type[BelowThreshold] = BelowThreshold
    if unknown:
        error_type = UnknownSigner
    elif bad:
        error_type = BadSignature
    return error_type(
        label, valid, role.threshold, unknown_keyids=unknown, bad_keyids=bad, detail=detail
    )


def _verify_root(root_md: Metadata[Root], trusted_root: bytes) -> None:
    root = root_md.signed
    _check_root_keys(root, "root")
    payload = _signed_bytes(root_md, "root")
    pinned_md = _parse(trusted_root, "root", MAX_ROOT_BYTES)
    pinned = cast(Root, pinned_md.signed)
    _check_root_keys(pinned, "pinned root")
    if root.version < pinned.version:
        raise VersionRollback("root", root.version, pinned.version)
    if root.version == pinned.version:
        if payload != _signed_bytes(pinned_md, "root"):
            raise UntrustedRoot(
                f"root version {root.version} differs from the pinned root of the same version"
            )
        if not root.get_verification_result("root", payload, root_md.signatures):
            raise _threshold_failure(root, "root", "root", payload, root_md.signatures)
        return
    if root.version != pinned.version + 1:
        raise UntrustedRoot(
            f"root version {root.version} does not directly succeed pinned root version "
            f"{pinned.version}; rotate one version at a time"
        )
    result = root.get_root_verification_result(pinned, payload, root_md.signatures)
    if not result.first:
        raise _threshold_failure(
            pinned,
            "root",
            f"root v{root.version} (by pinned root v{pinned.version} keys)",
            payload,
            root_md.signatures,
        )
    if not result.second:
        raise _threshold_failure(
            root, "root", f"root v{root.version} (by its own keys)", payload, root_md.signatures
        )


def _safe_artifact_name(name: str) -> bool:
    if not 0 < len(name) <= MAX_ARTIFACT_NAME:
        return False
    return all(_NAME_COMPONENT.fullmatch(part) for part in name.split("/"))


def _artifacts(targets: Targets) -> dict[str, ArtifactSpec]:
    if targets.delegations is not None:
        raise MalformedRelease("release targets must not delegate")
    if not targets.targets:
        raise MalformedRelease("release lists no artifacts")
    if len(targets.targets) > MAX_ARTIFACTS:
        raise MalformedRelease(f"release lists more than {MAX_ARTIFACTS} artifacts")
    artifacts: dict[str, ArtifactSpec] = {}
    for position, (name, target) in enumerate(targets.targets.items()):
        # Artifacts are named by their place in the listing: a name that fails
        # these checks is exactly the text a message must not repeat.
        where = f"artifact {position + 1} (in listing order)"
        if not _safe_artifact_name(name):
            raise MalformedRelease(f"{where}: its name is not a safe relative path")
        hashes: dict[str, bytes] = {}
        for algorithm, hex_digest in target.hashes.items():
            size = HASH_ALGORITHMS.get(algorithm)
            if size is None:
                raise MalformedRelease(f"{where} lists an unsupported hash algorithm")
            digest: bytes | None = None
            with contextlib.suppress(TypeError, ValueError):
                digest = bytes.fromhex(hex_digest)
            if digest is None:
                raise MalformedRelease(f"{where}: its {algorithm} digest is not hex")
            if len(digest) != size:
                raise MalformedRelease(f"{where}: its {algorithm} digest has the wrong size")
            hashes[algorithm] = digest
        spec: ArtifactSpec | None = None
        with contextlib.suppress(ValueError):
            spec = ArtifactSpec(target.length, hashes)
        if spec is None:
            raise MalformedRelease(f"{where}: its length or hashes are unusable")
        artifacts[name] = spec
    return artifacts


def _min_version(targets: Targets) -> int:
    floor = targets.unrecognized_fields.get(MIN_VERSION_FIELD)
    # ``type`` first: JSON ``true`` and ``1.0`` compare equal to 1 in Python.
    if type(floor) is not int:
        raise MalformedRelease("targets metadata publishes no integer min_version")
    if not 0 <= floor <= targets.version:
        raise MalformedRelease(
            f"targets min_version {floor} is outside 0..{targets.version} (its own version)"
        )
    return floor


def _image_measurements(targets: Targets) -> Mapping[int, bytes]:
    """The platform registers from the image artifact's ``custom`` field, if listed."""
    target = targets.targets.get(IMAGE_MEASUREMENTS_ARTIFACT)
    if target is None:
        return {}
    if set(target.unrecognized_fields) != {CUSTOM_FIELD}:
        raise MalformedRelease(f"{IMAGE_MEASUREMENTS_ARTIFACT} carries no measurements (custom)")
    measurements: Mapping[int, bytes] | None = None
    # Raised below, outside the handler: the chained error would describe the input.
    with contextlib.suppress(ImageMeasurementsError):
        measurements = image_measurements_from_object(target.unrecognized_fields[CUSTOM_FIELD])
    if measurements is None:
        raise MalformedRelease(
            f"{IMAGE_MEASUREMENTS_ARTIFACT} custom field is not nitro-tpm-pcr-compute output"
        )
    return measurements


def _model_providers(targets: Targets) -> dict[str, bytes]:
    """Per model, the provider key its artifact's ``custom`` field names.

    Only the image artifact and model artifacts may carry fields beyond
    length and hashes; anything else is refused rather than ignored.
    """
    providers: dict[str, bytes] = {}
    for name, target in targets.targets.items():
        extra = target.unrecognized_fields
        if not extra or name == IMAGE_MEASUREMENTS_ARTIFACT:
            continue
        is_model = name.startswith(MODEL_ARTIFACT_PREFIX) and name.endswith(MODEL_ARTIFACT_SUFFIX)
        custom = extra.get(CUSTOM_FIELD)
        encoded = custom.get(PROVIDER_STATIC_FIELD) if isinstance(custom, dict) else None
        key: bytes | None = None
        if (
            is_model
            and set(extra) == {CUSTOM_FIELD}
            and isinstance(custom, dict)
            and set(custom) == {PROVIDER_STATIC_FIELD}
            and isinstance(encoded, str)
            and len(encoded) == 2 * PROVIDER_STATIC_BYTES
            and all(c in "0123456789abcdef" for c in encoded)
        ):
            key = bytes.fromhex(encoded)
        if key is None:
            raise MalformedRelease(
                "an artifact carries fields Mantle does not define (only a model's"
                " provider key and the image's measurements are allowed)"
            )
        providers[name[len(MODEL_ARTIFACT_PREFIX) : -len(MODEL_ARTIFACT_SUFFIX)]] = key
    return providers


def verify_release_metadata(
    root_bytes: bytes,
    targets_bytes: bytes,
    *,
    trusted_root: bytes,
    now: datetime,
    min_version: int,
) -> VerifiedRelease:
    """Verify a release's root and targets metadata; return what they promise.

    ``trusted_root``: the pinned root metadata bytes, required. It comes from
    the caller (a file the operator names, the node's pinned boot inputs),
    never from the bundle being verified; the bundle's root must be it or its
    signed successor. ``now``: a timezone-aware time for expiry.
    ``min_version``: the lowest targets version still acceptable (a node
    passes its TPM monotonic counter).

    Raises a :class:`~protocol.release.ReleaseError` subclass on any failure
    (:class:`~protocol.release.UntrustedRoot` without a pinned root).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not isinstance(trusted_root, bytes) or not trusted_root:
        # Fail closed: without a pin any self-signed root would pass, and
        # with it whatever its keys signed.
        raise UntrustedRoot("no pinned root given; a release verifies only against a pinned root")
    root_md = cast(Metadata[Root], _parse(root_bytes, "root", MAX_ROOT_BYTES))
    targets_md = cast(Metadata[Targets], _parse(targets_bytes, "targets", MAX_TARGETS_BYTES))
    root = root_md.signed
    targets = targets_md.signed

    _verify_root(root_md, trusted_root)
    if root.is_expired(now):
        raise Expired("root", root.expires, now)

    targets_payload = _signed_bytes(targets_md, "targets")
    delegated = False
    with contextlib.suppress(UnsignedMetadataError):
        root.verify_delegate("targets", targets_payload, targets_md.signatures)
        delegated = True
    if not delegated:
        raise _threshold_failure(root, "targets", "targets", targets_payload, targets_md.signatures)
    signers = tuple(
        sorted(
            root.get_verification_result("targets", targets_payload, targets_md.signatures).signed
        )
    )

    if targets.is_expired(now):
        raise Expired("targets", targets.expires, now)
    if targets.version < min_version:
        raise VersionRollback("targets", targets.version, min_version)
    published_floor = _min_version(targets)

    return VerifiedRelease(
        version=targets.version,
        artifacts=_artifacts(targets),
        image_measurements=_image_measurements(targets),
        min_version=published_floor,
        model_providers=_model_providers(targets),
        release_digest=hashlib.sha384(targets_payload).digest(),
        expires=targets.expires,
        root_version=root.version,
        root_digest=hashlib.sha384(_signed_bytes(root_md, "root")).digest(),
        signer_keyids=signers,
    )
