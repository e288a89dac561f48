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

from nodes.release._artifacts import _open_regular, _ReadFailure
from protocol.release import (
    IGNORED_DIRECTORIES,
    MANTLE_PACKAGES,
    SourceTreeMismatch,
    compare_source_tree,
    format_source_manifest,
    is_manifest_path,
    parse_source_manifest,
)


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
        return Path(self._path_text(relative))

    def _path_text(self, relative: str) -> str:
        # Plain strings: boot joins and opens every file, and pathlib's parsing
        # would cost more than hashing the files does.
        package, _, rest = relative.partition("/")
        return os.path.join(self.roots[package], rest)

    def files(self) -> list[str]:
        """Every file under the packages, as manifest paths, ``__pycache__`` left out.

        A symbolic link to a directory is refused rather than followed or
        skipped: Python would import from it, and a walk that skipped it
        would not see what it holds.
        """
        found: list[str] = []
        for package in MANTLE_PACKAGES:
            root = os.fspath(self.roots[package])
            if not os.path.isdir(root):
                raise SourceTreeMismatch("missing", package, "package directory not installed")
            for directory, subdirectories, names in os.walk(root):
                inside = os.path.relpath(directory, root)
                prefix = package if inside == "." else f"{package}/{inside.replace(os.sep, '/')}"
                for subdirectory in list(subdirectories):
                    if subdirectory in IGNORED_DIRECTORIES:
                        subdirectories.remove(subdirectory)
                    elif os.path.islink(os.path.join(directory, subdirectory)):
                        path = f"{prefix}/{subdirectory}"
                        raise SourceTreeMismatch(
                            "unlisted",
                            path if is_manifest_path(path) else None,
                            "a symbolic link to a directory inside a package",
                        )
                found.extend(f"{prefix}/{name}" for name in names)
        return sorted(found)

    def sha384_of(self, relative: str) -> bytes:
        """SHA-384 of the file at manifest path ``relative``; a file that cannot
        be opened as a regular file counts as missing."""
        try:
            fd, _ = _open_regular(self._path_text(relative))
        except _ReadFailure as failure:
            detail = failure.detail
        else:
            with os.fdopen(fd, "rb") as handle:
                return hashlib.file_digest(handle, "sha384").digest()
        where = relative if is_manifest_path(relative) else None
        raise SourceTreeMismatch("missing", where, detail)


def source_manifest(tree: SourceTree) -> bytes:
    """The source manifest of ``tree``: every file with its SHA-384."""
    return format_source_manifest({relative: tree.sha384_of(relative) for relative in tree.files()})


@functools.cache
def running_source_manifest() -> bytes:
    """The source manifest of the packages this process imports from, computed
    once per process (release publishing in development and tests; boot never
    uses it: it hashes the files afresh)."""
    return source_manifest(SourceTree.running())


def verify_source_tree(manifest: bytes, tree: SourceTree) -> int:
    """Hash ``tree`` and compare it with ``manifest`` (boot's running-code check).

    Returns the number of files hashed. Raises
    :class:`~protocol.release.SourceTreeMismatch` for a modified, missing or
    unlisted code file, :class:`~protocol.release.MalformedRelease` for a
    manifest that does not parse.
    """
    listed = parse_source_manifest(manifest)
    present = tree.files()
    found = set(present)
    digests = {relative: tree.sha384_of(relative) for relative in listed if relative in found}
    compare_source_tree(listed, present, digests)
    return len(digests)
