"""Bounded reads of the small files Mantle trusts or verifies: pins, release metadata, keys.

One reader for all of them (the client's pins and release bundles here, the
operators' key files and the node's release bundle in :mod:`nodes.release`,
which imports it from :mod:`mantle`): it reads at most one byte past the
limit, so the size is judged on what was read rather than on a ``stat`` the
file can outgrow, and it raises the caller's typed error outside the
``except`` block, so no ``OSError`` rides along as ``__context__``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from protocol.release import MalformedRelease


class KeyFileError(Exception):
    """A key file is missing, unreadable, of the wrong type, or would be overwritten."""


def read_bounded_file(
    path: Path, limit: int, what: str, *, error: Callable[[str], Exception]
) -> bytes:
    """The bytes of ``path`` if it holds at most ``limit``; else ``error(message)``.

    ``what`` names the file in the message (the path is the caller's, never
    the file's content).
    """
    reason: str | None = None
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    if reason is not None:
        # Raised outside the handler (no __context__).
        raise error(f"cannot read {what} at {path}: {reason}")
    if len(data) > limit:
        raise error(f"{what} at {path} is larger than {limit} bytes")
    return data


def read_metadata_file(path: Path, limit: int, what: str) -> bytes:
    """A release metadata or proof file; a missing, unreadable or oversized one
    is a :class:`~protocol.release.MalformedRelease`."""
    return read_bounded_file(path, limit, what, error=MalformedRelease)
