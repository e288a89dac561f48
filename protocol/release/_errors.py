"""Typed refusals of a release. Each names the check that failed.

Messages carry only facts the verifier established (role names, counts,
versions, dates, names of artifacts in a verified release); never file
contents, and never a key id or name taken from metadata still being judged:
those are the text an attacker chose. Errors are raised outside ``except``
blocks, so no parser exception (which quotes what it read) rides along in
``__context__``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime


class ReleaseError(Exception):
    """Base class: this release must not run."""


class MalformedRelease(ReleaseError):
    """Metadata that does not parse, has the wrong role type, or breaks a
    structural rule (unsafe artifact name, unsupported hash, no artifacts)."""


class BelowThreshold(ReleaseError):
    """Fewer valid signatures from the role's keys than its threshold."""

    def __init__(
        self,
        role: str,
        valid: int,
        threshold: int,
        *,
        unknown_keyids: Sequence[str] = (),
        bad_keyids: Sequence[str] = (),
        detail: str = "",
    ) -> None:
        self.role = role
        self.valid = valid
        self.threshold = threshold
        self.unknown_keyids = tuple(unknown_keyids)
        self.bad_keyids = tuple(bad_keyids)
        # The keyids stay attributes for a program to inspect; the message
        # counts them, since a signature's keyid is whatever its writer chose.
        parts = [f"{role} metadata has {valid} valid signature(s), threshold is {threshold}"]
        if self.unknown_keyids:
            parts.append(f"{len(self.unknown_keyids)} signature(s) by keys not named for the role")
        if self.bad_keyids:
            parts.append(f"{len(self.bad_keyids)} signature(s) that do not verify")
        if detail:
            parts.append(detail)
        super().__init__("; ".join(parts))


class UnknownSigner(BelowThreshold):
    """Threshold not met, and signatures came from keys the root does not
    name for the role (a release signed with the wrong key)."""


WrongKey = UnknownSigner


class BadSignature(BelowThreshold):
    """Threshold not met, and signatures by named keys do not verify (the
    signed metadata was altered after signing)."""


class UntrustedRoot(ReleaseError):
    """The supplied root is neither the pinned root nor a successor signed
    by a threshold of the pinned root's keys."""


class Expired(ReleaseError):
    """Metadata whose expiry is not after the verification time."""

    def __init__(self, role: str, expires: datetime, now: datetime) -> None:
        self.role = role
        self.expires = expires
        self.now = now
        super().__init__(
            f"{role} metadata expired at {expires.isoformat()} (now {now.isoformat()})"
        )


class VersionRollback(ReleaseError):
    """A version lower than the one already trusted."""

    def __init__(self, role: str, version: int, minimum: int) -> None:
        self.role = role
        self.version = version
        self.minimum = minimum
        super().__init__(
            f"{role} version {version} is lower than the trusted minimum {minimum} (rollback)"
        )


class ArtifactCheck(enum.StrEnum):
    """What :class:`ArtifactMismatch` found (its ``check``)."""

    #: No file at the installed path (or it cannot be opened).
    MISSING = "missing"
    #: The installed path is not a regular file.
    NOT_A_FILE = "not-a-file"
    #: The length differs from the release (or changed while being read).
    LENGTH = "length"
    #: The file is not an artifact of this release.
    UNLISTED = "unlisted"
    #: An image file whose measurements differ from the values the release signed.
    IMAGE_MEASUREMENTS = "image-measurements"
    #: A digest differs from the release: one check per hash algorithm.
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"


class ArtifactMismatch(ReleaseError):
    """An installed artifact differs from what the release lists; ``check`` says how."""

    def __init__(self, name: str, check: ArtifactCheck, detail: str = "") -> None:
        self.name = name
        self.check = check
        message = f"artifact {name!r} failed the {check.value} check"
        super().__init__(f"{message}: {detail}" if detail else message)


class NotInLog(ReleaseError):
    """No valid proof that the release's entry is in the pinned transparency log."""
