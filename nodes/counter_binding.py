"""Counter bindings on disk: which definition of a TPM counter this node made.

The file holds one :class:`protocol.counter_binding.CounterBinding` in its
canonical encoding. It is a memory, not a credential: root on the host can
read, delete or rewrite it, and the guard's checks (and the TPM's counter
rules) are what make that visible; see :mod:`actors.counter_guard`.

Writes are atomic (a temporary file in the same directory, flushed and
synced, then renamed over the target, then the directory synced), so a crash
leaves either the old binding or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from actors.counter_guard import MAX_BINDING_BYTES, CounterBinding

__all__ = ["read_binding", "write_binding"]


def read_binding(path: Path) -> CounterBinding | None:
    """The binding stored at ``path``, ``None`` if there is no file.

    :class:`actors.counter_guard.CounterRefused` (MALFORMED_BINDING) if the
    file is not a binding; ``OSError`` if it cannot be read.
    """
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BINDING_BYTES + 1)
    except FileNotFoundError:
        return None
    # Over-long data fails decoding, like any other malformed content.
    return CounterBinding.decode(data)


def write_binding(path: Path, binding: CounterBinding) -> None:
    """Store ``binding`` at ``path`` atomically (``OSError`` on failure)."""
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = directory / f".{path.name}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(binding.encode())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    directory_descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_descriptor)
    finally:
        os.close(directory_descriptor)
