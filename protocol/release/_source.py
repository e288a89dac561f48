"""The source manifest: every file of the installed Mantle packages, with its SHA-384.

A release lists the manifest as its code artifact (:data:`SOURCE_MANIFEST_ARTIFACT`);
boot hashes the files the running process imports from and compares them with
it (:func:`compare_source_tree`), refusing any modified or missing file and any
unlisted file Python would import (:data:`CODE_SUFFIXES`). The file walking and
hashing live in ``nodes.release`` (this module does no IO).

Format: ASCII, one line per file, sorted by path, no duplicates::

    <96 lowercase hex digits: SHA-384 of the file>  <package>/<relative path>\\n

Paths are POSIX paths of safe components (the release artifact-name rule),
relative to the directory that holds the package, and their first component is
one of :data:`MANTLE_PACKAGES`. ``__pycache__`` directories are not listed:
a bytecode cache is derived from a listed source, and boot holds each one it
finds to exactly the bytes this interpreter writes for that source (the check
compiles, so it lives in ``nodes.release``); a cache that differs, that names
no listed source, or that another interpreter wrote stops boot
(``"bytecode"``), and so does a ``sys.pycache_prefix``, which would read
caches from outside the packages (``"pycache_prefix"``).

On a developer machine this catches a node started from a tree other than the
one released. It is not what makes an EC2 node trustworthy: code that was
modified can skip any check it runs on itself, and the check covers only the
package directories -- not site-packages, ``.pth`` files, ``sitecustomize``
or the interpreter, any of which runs code before boot does. There, the node
image's dm-verity root hash, inside the UKI that PCR 4 measures, makes every
byte of the read-only root file system (the interpreter, site-packages and
Mantle's packages with their ``__pycache__``) part of the attested image, and
the release names that image.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from protocol.release._errors import MalformedRelease, ReleaseError

#: The release artifact that holds the source manifest.
SOURCE_MANIFEST_ARTIFACT: Final = "code/mantle-source.manifest"
#: The top-level packages a Mantle process imports from.
MANTLE_PACKAGES: Final = ("actors", "protocol", "nodes", "simulations", "mantle")
#: Files Python imports as code; an unlisted one refuses boot. (``.pyc``
#: outside ``__pycache__`` is imported when no ``.py`` sits beside it.)
CODE_SUFFIXES: Final = (".py", ".pyc", ".so")
#: The directory the interpreter keeps bytecode caches in. Never listed: each
#: cache in it is checked against the listed source it was compiled from.
BYTECODE_CACHE_DIRECTORY: Final = "__pycache__"
MAX_SOURCE_MANIFEST_BYTES: Final = 4 << 20
MAX_SOURCE_FILES: Final = 20_000
DIGEST_SIZE: Final = 48

_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_LINE = re.compile(r"([0-9a-f]{96})  ([^\n]+)")


class SourceMismatchCheck(enum.StrEnum):
    """What :class:`SourceTreeMismatch` found (its ``check``)."""

    #: A listed file differs from the release.
    MODIFIED = "modified"
    #: A listed file (or a package directory) is not installed.
    MISSING = "missing"
    #: Code the release does not list.
    UNLISTED = "unlisted"
    #: A bytecode cache that is not what this interpreter writes for a listed source.
    BYTECODE = "bytecode"
    #: A directory that cannot be listed.
    UNREADABLE = "unreadable"
    #: The interpreter reads its bytecode caches from somewhere else.
    PYCACHE_PREFIX = "pycache_prefix"


class SourceTreeMismatch(ReleaseError):
    """The running code differs from the release's source manifest.

    ``check`` is ``"modified"``, ``"missing"`` or ``"unlisted"`` (a file),
    ``"bytecode"`` (a bytecode cache that is not what this interpreter writes
    for a listed source), ``"unreadable"`` (a directory that cannot be
    listed) or ``"pycache_prefix"`` (the interpreter reads caches from
    elsewhere); ``path`` the file (``None`` when its name is not a safe path,
    so it is not repeated, or when the refusal is not about one file:
    ``subject`` then says what it is about).
    """

    def __init__(
        self,
        check: SourceMismatchCheck,
        path: str | None,
        detail: str,
        *,
        subject: str | None = None,
    ) -> None:
        self.check = check
        self.path = path
        where = path if path is not None else subject or "a file with an unsafe name"
        super().__init__(f"source tree check failed ({check.value}): {where}: {detail}")


def is_package_path(path: str) -> bool:
    """Whether ``path`` is a safe path inside a Mantle package (one an error
    may quote): a manifest path, or one inside a bytecode cache directory."""
    parts = path.split("/")
    return (
        0 < len(path) <= 1024
        and len(parts) >= 2
        and parts[0] in MANTLE_PACKAGES
        and all(_COMPONENT.fullmatch(part) for part in parts)
    )


def is_manifest_path(path: str) -> bool:
    """Whether ``path`` may appear in a source manifest."""
    return is_package_path(path) and BYTECODE_CACHE_DIRECTORY not in path.split("/")


def is_code_path(path: str) -> bool:
    """Whether Python would import the file at ``path`` as code."""
    return path.endswith(CODE_SUFFIXES)


def format_source_manifest(files: Mapping[str, bytes]) -> bytes:
    """The canonical manifest for ``{path: sha384}``."""
    if not files:
        raise MalformedRelease("a source manifest lists at least one file")
    lines = []
    for path in sorted(files):
        digest = files[path]
        if not is_manifest_path(path):
            raise MalformedRelease("source manifest path is not a safe package path")
        if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
            raise MalformedRelease("source manifest digests are SHA-384")
        lines.append(f"{digest.hex()}  {path}\n")
    return "".join(lines).encode("ascii")


def parse_source_manifest(data: bytes) -> Mapping[str, bytes]:
    """``{path: sha384}`` from a manifest written by :func:`format_source_manifest`.

    Strict: canonical order, no duplicates, safe package paths only; the
    manifest is a verified release artifact, but it is still parsed before use.
    """
    if not isinstance(data, bytes) or not 0 < len(data) <= MAX_SOURCE_MANIFEST_BYTES:
        raise MalformedRelease(f"a source manifest is 1 to {MAX_SOURCE_MANIFEST_BYTES} bytes")
    if not data.isascii() or not data.endswith(b"\n"):
        raise MalformedRelease("a source manifest is ASCII lines")
    lines = data.decode("ascii").split("\n")[:-1]
    if len(lines) > MAX_SOURCE_FILES:
        raise MalformedRelease(f"a source manifest lists at most {MAX_SOURCE_FILES} files")
    files: dict[str, bytes] = {}
    previous = ""
    for number, line in enumerate(lines, start=1):
        match = _LINE.fullmatch(line)
        if match is None or not is_manifest_path(match.group(2)):
            raise MalformedRelease(f"source manifest line {number} is malformed")
        path = match.group(2)
        if path <= previous:
            raise MalformedRelease(f"source manifest line {number} is out of order or repeated")
        files[path] = bytes.fromhex(match.group(1))
        previous = path
    return MappingProxyType(files)


def compare_source_tree(
    listed: Mapping[str, bytes], present: Iterable[str], digests: Mapping[str, bytes]
) -> None:
    """Check the running tree against the manifest; raise :class:`SourceTreeMismatch`.

    ``present``: every file found under the package directories (relative
    paths, ``__pycache__`` left out: its caches are checked against the
    sources, in ``nodes.release``); ``digests``: the SHA-384 of each listed
    file that is present. Unlisted code is refused first (no hashing needed),
    then missing files, then modified ones.
    """
    found = set(present)
    for path in sorted(found - set(listed)):
        if is_code_path(path):
            raise SourceTreeMismatch(
                SourceMismatchCheck.UNLISTED,
                path if is_manifest_path(path) else None,
                "code the release does not list would be importable",
            )
    for path in sorted(listed):
        if path not in found:
            raise SourceTreeMismatch(
                SourceMismatchCheck.MISSING, path, "listed by the release, not installed"
            )
        digest = digests.get(path)
        if digest is None or not hmac.compare_digest(digest, listed[path]):
            raise SourceTreeMismatch(
                SourceMismatchCheck.MODIFIED, path, "SHA-384 differs from the release"
            )
