"""The log's Ed25519 key files."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nodes.release import KeyFileError, load_private_key, load_public_key, write_keypair


def write_log_keypair(private_path: Path) -> Path:
    """Generate the log's Ed25519 key; return the public key file's path."""
    return write_keypair(private_path, Ed25519PrivateKey.generate())


def load_log_signing_key(path: Path) -> Ed25519PrivateKey:
    key = load_private_key(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key; logs sign with Ed25519")
    return key


def load_log_public_key(path: Path) -> bytes:
    """The 32 raw bytes of the log's public key from a PEM file."""
    key = load_public_key(path)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 key; logs sign with Ed25519")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
