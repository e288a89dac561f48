"""The running code on disk: where its packages are, and hashing them.

:meth:`SourceTree.running` finds the directory of each Mantle package the
process imports from -- from the imported modules' ``__file__`` (or, for a
package not imported yet, from the import system's own lookup), never from the
working directory. :func:`source_manifest` lists every file of those packages
with its SHA-384 (the release's code artifact; one helper for every publisher:
``mantle-node release``, the demo, the test release kit), and
:func:`verify_source_tree` is boot's check of the running tree against a
release's manifest. The format and the comparison are pure and live in
:mod:`protocol.release`.

Bytecode caches are code too: Python runs ``__pycache__/<stem>.<tag>.pyc``
instead of the listed ``<stem>.py`` whenever the cache's header agrees with
the source, without ever comparing the code inside with it. So the check
walks the ``__pycache__`` directories as well, and holds every cache in them
to exactly the bytes this interpreter writes for the listed, already matched
source (:mod:`nodes.release._bytecode` says how); anything else there that
Python could import is refused. A ``sys.pycache_prefix``
(``PYTHONPYCACHEPREFIX``) moves the caches out of the package directories,
where this check cannot see them, so it is refused outright.

What the check does not cover: only the package directories are walked. The
interpreter itself, the standard library, site-packages, ``.pth`` files and a
``sitecustomize`` or ``usercustomize`` module all run before boot does, and on
a development machine whoever controls them controls the node. On EC2 they
are files of the read-only root file system whose dm-verity root hash, inside
the UKI that PCR 4 measures, the release names: that measurement, not this
check, is what vouches for them (and for the packages too: code that was
changed could skip its own check).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from nodes.release._artifacts import _open_regular, _ReadFailure
from nodes.release._bytecode import (
    SourceFile,
    check_cache,
    expected_caches,
    unexpected_file_refusal,
)
from protocol.release import (
    BYTECODE_CACHE_DIRECTORY,
    MANTLE_PACKAGES,
    SourceMismatchCheck,
    SourceTreeMismatch,
    compare_source_tree,
    format_source_manifest,
    is_manifest_path,
    is_package_path,
    parse_source_manifest,
)

#: The largest source boot compiles (to check its cache) and the largest cache
#: it reads; Mantle's largest module is a few dozen KiB.
MAX_COMPILED_FILE_BYTES: Final = 8 << 20


class SourceTreeError(Exception):
    """A Mantle package cannot be located as a directory of files."""


def _package_directory(name: str) -> Path:
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None and module is None:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
    if origin is None or Path(origin).name != "__init__.py":
        raise SourceTreeError(f"package {name} is not a regular package on disk")
    return Path(origin).resolve().parent


@dataclass(frozen=True)
class SourceTree:
    """Where each Mantle package's files are: ``{package name: directory}``."""

    roots: Mapping[str, Path]

    def __post_init__(self) -> None:
        if set(self.roots) != set(MANTLE_PACKAGES):
            raise SourceTreeError(f"a source tree has exactly the packages {MANTLE_PACKAGES}")
        object.__setattr__(self, "roots", MappingProxyType(dict(self.roots)))

    @classmethod
    def running(cls) -> SourceTree:
        """The packages this process imports from."""
        return cls({name: _package_directory(name) for name in MANTLE_PACKAGES})

    @classmethod
    def at(cls, directory: Path) -> SourceTree:
        """The packages in one directory (a checkout, or a copy of one)."""
        return cls({name: Path(directory) / name for name in MANTLE_PACKAGES})

    def path_of(self, relative: str) -> Path:
        return Path(self.path_text(relative))

    def path_text(self, relative: str) -> str:
        """The file at manifest path ``relative``: the package directory joined
        with the rest (the path a cache's code records when the import system
        reached the package through this directory)."""
        # Plain strings: boot joins and opens every file, and pathlib's parsing
        # would cost more than hashing the files does.
        package, _, rest = relative.partition("/")
        return os.path.join(self.roots[package], rest)

    def files(self) -> list[str]:
        """Every file under the packages, as manifest paths, ``__pycache__`` left out."""
        return list(self.listing().files)

    def listing(self) -> TreeListing:
        """Every file under the packages: the files a manifest lists, and the
        files inside ``__pycache__`` directories.

        A symbolic link to a directory is refused rather than followed or
        skipped: Python would import from it, and a walk that skipped it
        would not see what it holds. So is a directory the walk cannot list:
        the import system opens a cache by name, without listing its directory.
        """
        files: list[str] = []
        caches: list[str] = []
        for package in MANTLE_PACKAGES:
            root = os.fspath(self.roots[package])
            if not os.path.isdir(root):
                raise SourceTreeMismatch(
                    SourceMismatchCheck.MISSING, package, "package directory not installed"
                )
            unlistable: list[OSError] = []
            for directory, subdirectories, names in os.walk(root, onerror=unlistable.append):
                inside = os.path.relpath(directory, root)
                prefix = package if inside == "." else f"{package}/{inside.replace(os.sep, '/')}"
                for subdirectory in subdirectories:
                    if os.path.islink(os.path.join(directory, subdirectory)):
                        path = f"{prefix}/{subdirectory}"
                        raise SourceTreeMismatch(
                            SourceMismatchCheck.UNLISTED,
                            path if is_package_path(path) else None,
                            "a symbolic link to a directory inside a package",
                        )
                in_cache = BYTECODE_CACHE_DIRECTORY in prefix.split("/")
                (caches if in_cache else files).extend(f"{prefix}/{name}" for name in names)
            if unlistable:
                raise SourceTreeMismatch(
                    SourceMismatchCheck.UNREADABLE,
                    None,
                    "cannot be listed, so what Python may load from it cannot be checked",
                    subject=f"a directory inside package {package}",
                )
        return TreeListing(tuple(sorted(files)), tuple(sorted(caches)))

    def sha384_of(self, relative: str) -> bytes:
        """SHA-384 of the file at manifest path ``relative``; a file that cannot
        be opened as a regular file counts as missing."""
        try:
            fd, _ = _open_regular(self.path_text(relative))
        except _ReadFailure as failure:
            detail = failure.detail
        else:
            with os.fdopen(fd, "rb") as handle:
                return hashlib.file_digest(handle, "sha384").digest()
        where = relative if is_manifest_path(relative) else None
        raise SourceTreeMismatch(SourceMismatchCheck.MISSING, where, detail)

    def read_source(self, relative: str) -> SourceFile:
        """The bytes of the listed source at ``relative`` and the mtime the
        import system records for it, from one open file (so the bytes hashed
        are the bytes compiled, and the mtime is theirs); a file that cannot
        be opened counts as missing."""
        data, mtime = self._read_whole(relative, SourceMismatchCheck.MISSING)
        return SourceFile(data, mtime)

    def read_cache(self, relative: str) -> bytes:
        """The whole bytecode cache at ``relative``."""
        data, _ = self._read_whole(relative, SourceMismatchCheck.BYTECODE)
        return data

    def _read_whole(self, relative: str, check: SourceMismatchCheck) -> tuple[bytes, int]:
        where = relative if is_package_path(relative) else None
        try:
            fd, _ = _open_regular(self.path_text(relative))
        except _ReadFailure as failure:
            detail = failure.detail
        else:
            with os.fdopen(fd, "rb") as handle:
                mtime = int(os.fstat(handle.fileno()).st_mtime)
                data = handle.read(MAX_COMPILED_FILE_BYTES + 1)
            if len(data) <= MAX_COMPILED_FILE_BYTES:
                return data, mtime
            # Too large to compile or compare: its cache cannot be vouched for.
            check = SourceMismatchCheck.BYTECODE
            detail = f"larger than the {MAX_COMPILED_FILE_BYTES} bytes boot compiles or reads whole"
        raise SourceTreeMismatch(check, where, detail)


@dataclass(frozen=True)
class TreeListing:
    """The files found under a tree's packages, as sorted relative paths:
    ``files`` outside any ``__pycache__`` directory, ``caches`` inside one."""

    files: tuple[str, ...]
    caches: tuple[str, ...]


@dataclass(frozen=True)
class SourceTreeCheck:
    """What boot's running-code check did: ``files_hashed`` listed files, and
    ``caches_checked`` bytecode caches compiled from their source and compared."""

    files_hashed: int
    caches_checked: int


def source_manifest(tree: SourceTree) -> bytes:
    """The source manifest of ``tree``: every file with its SHA-384."""
    return format_source_manifest({relative: tree.sha384_of(relative) for relative in tree.files()})


@functools.cache
def running_source_manifest() -> bytes:
    """The source manifest of the packages this process imports from, computed
    once per process (release publishing in development and tests; boot never
    uses it: it hashes the files afresh)."""
    return source_manifest(SourceTree.running())


def verify_source_tree(manifest: bytes, tree: SourceTree) -> SourceTreeCheck:
    """Hash ``tree`` and compare it with ``manifest`` (boot's running-code check).

    Raises :class:`~protocol.release.SourceTreeMismatch` for a modified,
    missing or unlisted code file, a bytecode cache that is not exactly what
    this interpreter writes for its listed source (``"bytecode"``) or a
    ``sys.pycache_prefix`` (``"pycache_prefix"``), and
    :class:`~protocol.release.MalformedRelease` for a manifest that does not
    parse.
    """
    if sys.pycache_prefix is not None:
        raise SourceTreeMismatch(
            SourceMismatchCheck.PYCACHE_PREFIX,
            None,
            "sys.pycache_prefix (PYTHONPYCACHEPREFIX, -X pycache_prefix) is set: Python"
            " would load bytecode from outside the package directories, which this check"
            " cannot see; unset it",
            subject="this interpreter",
        )
    listed = parse_source_manifest(manifest)
    listing = tree.listing()
    found = set(listing.files)
    # Which source each cache must have been compiled from, before anything is
    # hashed; files there that no listed source explains are refused after the
    # comparison (so an unlisted module is reported as that).
    explained: dict[str, tuple[str, int]] = {}
    for source in listed:
        if source in found:
            for cache, level in expected_caches(source).items():
                explained[cache] = (source, level)
    caches: dict[str, tuple[str, int]] = {}
    refusals: list[SourceTreeMismatch] = []
    for path in listing.caches:
        if path in explained:
            caches[path] = explained[path]
        else:
            refusal = unexpected_file_refusal(path, path if is_package_path(path) else None)
            if refusal is not None:
                refusals.append(refusal)
    compiled = {source for source, _ in caches.values()}
    sources: dict[str, SourceFile] = {}
    digests: dict[str, bytes] = {}
    for relative in listed:
        if relative not in found:
            continue
        if relative in compiled:
            sources[relative] = tree.read_source(relative)
            digests[relative] = hashlib.sha384(sources[relative].data).digest()
        else:
            digests[relative] = tree.sha384_of(relative)
    compare_source_tree(listed, listing.files, digests)
    if refusals:
        raise refusals[0]
    # Every source a cache belongs to has matched the release by now: each
    # cache is held to what the released bytes compile to.
    for cache, (source, level) in sorted(caches.items()):
        check_cache(
            tree.read_cache(cache),
            where=cache,
            source=sources[source],
            filename=tree.path_text(source),
            optimization=level,
        )
    return SourceTreeCheck(files_hashed=len(digests), caches_checked=len(caches))
