"""Hashing installed artifacts and checking them against a verified release.

Artifacts can be large (model weights of hundreds of MB), so each is read
once, in 1 MiB chunks into one reused buffer, feeding every listed hash in
the same pass; hashlib drops the GIL for large updates. A length mismatch is
caught from ``fstat`` before any byte is hashed, and the byte count read is
checked again afterwards, so a file that changes while being read fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from protocol.measurement import (
    IMAGE_MEASUREMENTS_ARTIFACT,
    MAX_IMAGE_MEASUREMENTS_BYTES,
    ImageMeasurementsError,
    parse_image_measurements,
)
from protocol.release import (
    DEFAULT_HASH_ALGORITHM,
    HASH_ALGORITHMS,
    ArtifactCheck,
    ArtifactMismatch,
    ArtifactSpec,
    MalformedRelease,
    VerifiedRelease,
)

CHUNK_SIZE = 1 << 20


class _ReadFailure(Exception):
    def __init__(self, check: ArtifactCheck, detail: str) -> None:
        super().__init__(detail)
        self.check = check
        self.detail = detail


def _hash_open_file(fd: int, algorithms: Iterable[str]) -> tuple[int, dict[str, bytes]]:
    hashers = {name: hashlib.new(name) for name in algorithms}
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    total = 0
    while True:
        n = os.readv(fd, [buffer])
        if n == 0:
            break
        chunk = view[:n]
        for hasher in hashers.values():
            hasher.update(chunk)
        total += n
    return total, {name: h.digest() for name, h in hashers.items()}


def _open_regular(path: str | Path) -> tuple[int, int]:
    """Open ``path`` for reading; return ``(fd, size)``; refuse non-regular files."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
    # and hang boot; it has no effect on reads of a regular file.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    # Every failure is raised outside its handler, so no __context__ keeps
    # the OSError (and the path it holds) behind the typed error.
    failure: _ReadFailure | None = None
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        failure = _ReadFailure(ArtifactCheck.MISSING, "no file at the installed path")
    except OSError as exc:
        failure = _ReadFailure(ArtifactCheck.MISSING, f"cannot open: {exc.strerror}")
    if failure is not None:
        raise failure
    try:
        info = os.fstat(fd)
    except OSError as exc:
        failure = _ReadFailure(ArtifactCheck.MISSING, f"cannot stat: {exc.strerror}")
    if failure is not None:
        os.close(fd)
        raise failure
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _ReadFailure(ArtifactCheck.NOT_A_FILE, "installed path is not a regular file")
    return fd, info.st_size


def hash_artifact(
    path: Path, algorithms: Iterable[str] = (DEFAULT_HASH_ALGORITHM,)
) -> ArtifactSpec:
    """Length and digests of the file at ``path`` (operator tooling: ``release build``)."""
    names = list(algorithms)
    for name in names:
        if name not in HASH_ALGORITHMS:
            raise MalformedRelease(f"unsupported hash algorithm {name!r}")
    fd, _ = _open_or_refuse(path.name, path)
    try:
        length, digests = _hash_open_file(fd, names)
    finally:
        os.close(fd)
    return ArtifactSpec(length, digests)


def _open_or_refuse(name: str, path: Path) -> tuple[int, int]:
    """:func:`_open_regular`, failing as :class:`ArtifactMismatch` for ``name``."""
    failure: _ReadFailure | None = None
    try:
        return _open_regular(path)
    except _ReadFailure as exc:
        failure = exc
    raise ArtifactMismatch(name, failure.check, failure.detail)


def _verify_one(name: str, spec: ArtifactSpec, path: Path) -> None:
    fd, size = _open_or_refuse(name, path)
    try:
        if size != spec.length:
            raise ArtifactMismatch(
                name, ArtifactCheck.LENGTH, f"{size} bytes installed, {spec.length} listed"
            )
        length, digests = _hash_open_file(fd, spec.hashes)
    finally:
        os.close(fd)
    if length != spec.length:
        raise ArtifactMismatch(name, ArtifactCheck.LENGTH, "file changed while it was being read")
    for algorithm, expected in spec.hashes.items():
        if not hmac.compare_digest(digests[algorithm], expected):
            raise ArtifactMismatch(
                name, ArtifactCheck(algorithm), "digest differs from the signed release"
            )


def verify_installed_artifacts(
    verified: VerifiedRelease, paths: Mapping[str, Path], *, require_all: bool = False
) -> None:
    """Check each file in ``paths`` against the artifact of that name in ``verified``.

    A name the release does not list fails as ``"unlisted"``. With
    ``require_all`` every listed artifact must be given a path (else
    ``"missing"``); without it, the caller checks a chosen subset (a node
    checks sealed model files separately, when it decrypts them). Raises
    :class:`ArtifactMismatch` naming the artifact and the failed check.
    """
    for name in sorted(set(paths) - set(verified.artifacts)):
        raise ArtifactMismatch(name, ArtifactCheck.UNLISTED, "not an artifact of this release")
    if require_all:
        for name in sorted(set(verified.artifacts) - set(paths)):
            raise ArtifactMismatch(name, ArtifactCheck.MISSING, "no installed path given")
    for name in sorted(paths):
        _verify_one(name, verified.artifacts[name], Path(paths[name]))
    if IMAGE_MEASUREMENTS_ARTIFACT in paths:
        _verify_image_file(verified, Path(paths[IMAGE_MEASUREMENTS_ARTIFACT]))


def _verify_image_file(verified: VerifiedRelease, path: Path) -> None:
    """The image file says what the signed metadata says about it.

    Verifiers holding only metadata pin the values in the artifact's signed
    ``custom`` field; the file is what ``nitro-tpm-pcr-compute`` printed. Both
    are signed, so only the signers could make them differ -- but then a node
    and a client would disagree about the image, so the release is refused.
    """
    installed: Mapping[int, bytes] | None = None
    with contextlib.suppress(OSError, ImageMeasurementsError), path.open("rb") as handle:
        # Refused below, outside the handler (a parse error would describe the file).
        installed = parse_image_measurements(handle.read(MAX_IMAGE_MEASUREMENTS_BYTES + 1))
    signed = verified.image_measurements
    if (
        installed is None
        or set(installed) != set(signed)
        or any(not hmac.compare_digest(installed[index], signed[index]) for index in signed)
    ):
        raise ArtifactMismatch(
            IMAGE_MEASUREMENTS_ARTIFACT,
            ArtifactCheck.IMAGE_MEASUREMENTS,
            "the file's measurements differ from the values the release signed",
        )


def artifact_paths_in(directory: Path, verified: VerifiedRelease) -> dict[str, Path]:
    """Map each artifact name to ``directory / name``.

    Names were checked to be plain relative paths (no ``..``, no absolute
    paths) when the metadata was verified. A symlink inside ``directory`` is
    followed on purpose: what is checked is the content, byte for byte.
    """
    return {name: directory / name for name in verified.artifacts}
