"""Values that describe a verified release."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

# Hash algorithms an artifact may be listed with, and their digest sizes.
# SHA-384 is the default: it matches the SHA-384 PCR bank, so an artifact's
# digest can be extended into a PCR as it stands.
HASH_ALGORITHMS: Mapping[str, int] = types.MappingProxyType(
    {"sha256": 32, "sha384": 48, "sha512": 64}
)
DEFAULT_HASH_ALGORITHM = "sha384"


@dataclass(frozen=True, slots=True)
class ArtifactSpec:
    """What a release promises about one artifact: its length and digests."""

    length: int
    hashes: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 0:
            raise ValueError("artifact length must be a non-negative integer")
        if not self.hashes:
            raise ValueError("artifact needs at least one hash")
        for algorithm, digest in self.hashes.items():
            if HASH_ALGORITHMS.get(algorithm) != len(digest):
                raise ValueError(f"unsupported hash algorithm or digest size: {algorithm}")
        object.__setattr__(self, "hashes", types.MappingProxyType(dict(self.hashes)))

    def hex_hashes(self) -> dict[str, str]:
        return {algorithm: digest.hex() for algorithm, digest in self.hashes.items()}


@dataclass(frozen=True, slots=True)
class VerifiedRelease:
    """A release whose metadata passed every check of
    :func:`~protocol.release.verify_release_metadata`.

    ``release_digest`` is SHA-384 of the canonical JSON of the signed targets
    metadata (exactly the bytes the release signers signed): it names the
    release in the transparency log and in the application PCR.

    ``image_measurements`` are the reference platform registers (PCR 4, 7, 12)
    of the node image the release runs on, from the ``custom`` field of its
    ``image/pcr-measurements.json`` artifact; empty if it names no image (no
    policy admits such a release). ``min_version`` is the cluster's release
    floor the release signers publish with it: verifiers leave out every
    release below the highest floor they know of. It is at most ``version``.
    """

    version: int
    artifacts: Mapping[str, ArtifactSpec]
    release_digest: bytes
    expires: datetime
    root_version: int
    root_digest: bytes
    signer_keyids: tuple[str, ...]
    image_measurements: Mapping[int, bytes]
    min_version: int
    #: Per model id, the provider's X25519 static key the release names for it.
    model_providers: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "artifacts", types.MappingProxyType(dict(self.artifacts)))
        object.__setattr__(
            self, "image_measurements", types.MappingProxyType(dict(self.image_measurements))
        )
        object.__setattr__(
            self, "model_providers", types.MappingProxyType(dict(self.model_providers))
        )

    def model_provider_static(self, model_id: str) -> bytes | None:
        """The static key of the provider this release names for ``model_id``
        (the only sender a keys node accepts that model's data keys from), or
        ``None``: then no import for the model is accepted at all."""
        return self.model_providers.get(model_id)
