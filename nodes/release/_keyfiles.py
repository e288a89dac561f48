"""Key files for release signers and the log: PKCS#8 PEM, private files 0600.

Signing keys live with operators, outside every node; nodes hold only public
keys (in the pinned root metadata and the pinned log key).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from mantle import KeyFileError, read_bounded_file

MAX_KEY_FILE = 16 * 1024


def read_small_file(path: Path, limit: int, what: str) -> bytes:
    """A small file an operator hands a command; a :class:`KeyFileError` if it
    is missing, unreadable or larger than ``limit``."""
    return read_bounded_file(path, limit, what, error=KeyFileError)


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode``; never overwrite an existing file."""
    refusal: str | None = None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        refusal = f"{path} exists; refusing to overwrite a key file"
    except OSError as exc:
        refusal = f"cannot create {path}: {exc.strerror or type(exc).__name__}"
    if refusal is not None:
        raise KeyFileError(refusal)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def private_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def public_pem(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def write_keypair(private_path: Path, key: PrivateKeyTypes) -> Path:
    """Write ``key`` (0600) and its public half next to it as ``*.pub.pem``."""
    public_path = private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.pem")
    write_new_file(private_path, private_pem(key), 0o600)
    write_new_file(public_path, public_pem(key.public_key()), 0o644)
    return public_path


def load_private_key(path: Path) -> PrivateKeyTypes:
    data = read_small_file(path, MAX_KEY_FILE, "private key")
    key: PrivateKeyTypes | None = None
    with contextlib.suppress(ValueError, TypeError):
        key = load_pem_private_key(data, password=None)
    if key is None:
        raise KeyFileError(f"{path} is not an unencrypted PKCS#8 PEM private key")
    if not isinstance(key, Ed25519PrivateKey | EllipticCurvePrivateKey):
        raise KeyFileError(f"{path} holds a key type releases do not use")
    return key


def load_public_key(path: Path) -> PublicKeyTypes:
    """A public key from a public PEM file, or the public half of a private one."""
    data = read_small_file(path, MAX_KEY_FILE, "key")
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    with contextlib.suppress(ValueError, TypeError):
        return load_pem_public_key(data)
    raise KeyFileError(f"{path} is not a PEM public key")
