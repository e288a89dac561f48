"""Signed tree heads: the log's signed statement of ``(tree_size, root_hash)``.

Signing input is the RFC 6962 §3.5 ``TreeHeadSignature`` structure, so that
tooling written for Certificate Transparency checks it unchanged::

    struct {
        Version version;              /* v1 = 0 */
        SignatureType signature_type; /* tree_hash = 1 */
        uint64 timestamp;             /* milliseconds since the epoch */
        uint64 tree_size;
        opaque sha256_root_hash[32];
    } TreeHeadSignature;              /* 50 bytes */

The log signs with Ed25519. On the wire (``get-sth``) the signature travels as
an RFC 5246 ``DigitallySigned`` value: hash algorithm 8 ("intrinsic"),
signature algorithm 7 (ed25519, RFC 8422 §5.1.3), a 2-byte length, then the
64-byte signature. A log is named by its ``log_id``: SHA-256 of the DER
SubjectPublicKeyInfo of its public key (RFC 6962 §3.2).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.tlog._errors import InvalidTreeHead, MalformedTlogData
from protocol.tlog._merkle import HASH_SIZE, MAX_TREE_SIZE

_TREE_HEAD_STRUCT = struct.Struct(">BBQQ32s")
_VERSION_V1 = 0
_SIGNATURE_TYPE_TREE_HASH = 1
_HASH_ALGORITHM_INTRINSIC = 8
_SIGNATURE_ALGORITHM_ED25519 = 7
ED25519_SIGNATURE_SIZE = 64
ED25519_PUBLIC_KEY_SIZE = 32
_MAX_UINT64 = (1 << 64) - 1


def tree_head_signing_input(tree_size: int, timestamp_ms: int, root_hash: bytes) -> bytes:
    """The 50 bytes a log signs for a tree head (RFC 6962 §3.5)."""
    if not 0 <= tree_size <= MAX_TREE_SIZE:
        raise MalformedTlogData("tree size out of range")
    if not 0 <= timestamp_ms <= _MAX_UINT64:
        raise MalformedTlogData("timestamp out of range")
    if len(root_hash) != HASH_SIZE:
        raise MalformedTlogData("root hash is not 32 bytes")
    return _TREE_HEAD_STRUCT.pack(
        _VERSION_V1, _SIGNATURE_TYPE_TREE_HASH, timestamp_ms, tree_size, root_hash
    )


def encode_digitally_signed(signature: bytes) -> bytes:
    """Wrap a raw Ed25519 signature as an RFC 5246 ``DigitallySigned``."""
    if len(signature) != ED25519_SIGNATURE_SIZE:
        raise MalformedTlogData("Ed25519 signature is not 64 bytes")
    return (
        bytes((_HASH_ALGORITHM_INTRINSIC, _SIGNATURE_ALGORITHM_ED25519))
        + len(signature).to_bytes(2, "big")
        + signature
    )


def decode_digitally_signed(data: bytes) -> bytes:
    """The raw Ed25519 signature inside a ``DigitallySigned``; strict."""
    if len(data) != 4 + ED25519_SIGNATURE_SIZE:
        raise MalformedTlogData("tree head signature has the wrong length")
    if data[0] != _HASH_ALGORITHM_INTRINSIC or data[1] != _SIGNATURE_ALGORITHM_ED25519:
        raise MalformedTlogData("tree head signature is not an Ed25519 DigitallySigned")
    if int.from_bytes(data[2:4], "big") != ED25519_SIGNATURE_SIZE:
        raise MalformedTlogData("tree head signature length field is wrong")
    return data[4:]


def log_id(log_public_key: bytes) -> bytes:
    """RFC 6962 §3.2 log ID: SHA-256 of the key's DER SubjectPublicKeyInfo."""
    key = _load_public_key(log_public_key)
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def _load_public_key(log_public_key: bytes) -> Ed25519PublicKey:
    if not isinstance(log_public_key, bytes) or len(log_public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise InvalidTreeHead("log public key is not a 32-byte Ed25519 key")
    with contextlib.suppress(ValueError):
        return Ed25519PublicKey.from_public_bytes(log_public_key)
    raise InvalidTreeHead("log public key is not a valid Ed25519 key")


def _b64decode(value: object, field: str) -> bytes:
    if not isinstance(value, str) or not value.isascii():
        # Checked, not caught: a UnicodeEncodeError would hold the string.
        raise MalformedTlogData(f"{field} is not a base64 string")
    with contextlib.suppress(binascii.Error):
        return base64.b64decode(value.encode("ascii"), validate=True)
    # Raised outside the handler, so that no __context__ keeps the input.
    raise MalformedTlogData(f"{field} is not valid base64")


def _uint(value: object, field: str, limit: int) -> int:
    # bool is an int subclass; a JSON true must not pass as tree size 1.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise MalformedTlogData(f"{field} is not an integer in range")
    return value


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A tree head and the log's Ed25519 signature over its signing input."""

    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _uint(self.tree_size, "tree_size", MAX_TREE_SIZE)
        _uint(self.timestamp_ms, "timestamp", _MAX_UINT64)
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise MalformedTlogData("root hash is not 32 bytes")
        if not isinstance(self.signature, bytes) or len(self.signature) != ED25519_SIGNATURE_SIZE:
            raise MalformedTlogData("tree head signature is not 64 bytes")

    def signing_input(self) -> bytes:
        return tree_head_signing_input(self.tree_size, self.timestamp_ms, self.root_hash)

    def to_json_dict(self) -> dict[str, object]:
        """The RFC 6962 §4.3 ``get-sth`` response body."""
        return {
            "tree_size": self.tree_size,
            "timestamp": self.timestamp_ms,
            "sha256_root_hash": base64.b64encode(self.root_hash).decode("ascii"),
            "tree_head_signature": base64.b64encode(encode_digitally_signed(self.signature)).decode(
                "ascii"
            ),
        }

    @classmethod
    def from_json_dict(cls, body: Mapping[str, object]) -> SignedTreeHead:
        """Parse a ``get-sth`` body strictly (types, sizes, encodings)."""
        if not isinstance(body, Mapping):
            raise MalformedTlogData("tree head is not a JSON object")
        expected = {"tree_size", "timestamp", "sha256_root_hash", "tree_head_signature"}
        missing = expected - set(body)
        if missing:
            raise MalformedTlogData(f"tree head lacks {sorted(missing)}")
        return cls(
            tree_size=_uint(body["tree_size"], "tree_size", MAX_TREE_SIZE),
            timestamp_ms=_uint(body["timestamp"], "timestamp", _MAX_UINT64),
            root_hash=_b64decode(body["sha256_root_hash"], "sha256_root_hash"),
            signature=decode_digitally_signed(
                _b64decode(body["tree_head_signature"], "tree_head_signature")
            ),
        )


def sign_tree_head(
    signing_key: Ed25519PrivateKey, tree_size: int, timestamp_ms: int, root_hash: bytes
) -> SignedTreeHead:
    """Sign ``(tree_size, timestamp_ms, root_hash)`` with the log's key.

    Ed25519 signatures are deterministic, so a simulated log signs the same
    bytes on every run of a seed.
    """
    signature = signing_key.sign(tree_head_signing_input(tree_size, timestamp_ms, root_hash))
    return SignedTreeHead(tree_size, timestamp_ms, root_hash, signature)


def verify_sth(sth: SignedTreeHead, log_public_key: bytes) -> None:
    """Check the log's signature on ``sth`` with the pinned 32-byte Ed25519
    ``log_public_key``; :class:`InvalidTreeHead` otherwise."""
    key = _load_public_key(log_public_key)
    verified = False
    with contextlib.suppress(InvalidSignature):
        key.verify(sth.signature, sth.signing_input())
        verified = True
    if not verified:
        raise InvalidTreeHead("tree head signature fails under the pinned log key")
