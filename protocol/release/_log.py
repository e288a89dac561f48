"""A release's transparency-log entry and the proof that it is logged.

Log entry (``leaf_input``), 74 bytes, fixed layout::

    b"mantle.release.v1\\x00"   18 bytes   domain tag and format version
    targets version             8 bytes    unsigned, big-endian
    release digest              48 bytes   SHA-384 of the signed targets bytes

Its leaf hash is ``SHA-256(0x00 || leaf_input)`` as for every RFC 9162 leaf.
Nodes, operators and clients all derive the entry with
:func:`release_log_entry`, so they agree on the leaf byte for byte.

Log proof (``ReleaseLogProof``) is a JSON document an operator stores next to
a release after appending it, and a node checks at boot without a network::

    {"log_id": b64, "sth": <get-sth body>, "leaf_index": int, "audit_path": [b64, ...]}

"A release is in the log" means: the tree head verifies under the pinned log
key, and the inclusion path leads from the entry's leaf hash to its root.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.release._errors import MalformedRelease, NotInLog
from protocol.release._model import VerifiedRelease
from protocol.tlog import (
    MAX_TREE_SIZE,
    SignedTreeHead,
    TlogError,
    leaf_hash,
    log_id,
    verify_inclusion,
    verify_sth,
)

RELEASE_ENTRY_TAG = b"mantle.release.v1\x00"
_ENTRY = struct.Struct(">18sQ48s")
RELEASE_ENTRY_SIZE = _ENTRY.size
#: Upper bound on a log proof document (its JSON form), for readers and the parser.
MAX_LOG_PROOF_BYTES = 64 * 1024
_MAX_AUDIT_PATH = 64
_NOT_JSON = object()


@dataclass(frozen=True, slots=True)
class ReleaseLogEntry:
    """The decoded fields of a release's log entry."""

    version: int
    release_digest: bytes


def release_log_entry(verified: VerifiedRelease) -> bytes:
    """The canonical ``leaf_input`` for ``verified`` (layout in the module doc)."""
    return encode_release_log_entry(verified.version, verified.release_digest)


def encode_release_log_entry(version: int, release_digest: bytes) -> bytes:
    if not 0 <= version < 1 << 64 or len(release_digest) != 48:
        raise MalformedRelease("release log entry needs a u64 version and a 48-byte digest")
    return _ENTRY.pack(RELEASE_ENTRY_TAG, version, release_digest)


def decode_release_log_entry(leaf_input: bytes) -> ReleaseLogEntry:
    """Strictly decode a log entry written by :func:`release_log_entry`."""
    if len(leaf_input) != RELEASE_ENTRY_SIZE:
        raise MalformedRelease("log entry is not a release entry (length)")
    tag, version, digest = _ENTRY.unpack(leaf_input)
    if tag != RELEASE_ENTRY_TAG:
        raise MalformedRelease("log entry is not a release entry (tag)")
    return ReleaseLogEntry(version, digest)


def _b64(value: object, field: str) -> bytes:
    if not isinstance(value, str) or not value.isascii():
        # Checked, not caught: a UnicodeEncodeError would hold the string.
        raise MalformedRelease(f"log proof {field} is not a base64 string")
    with contextlib.suppress(binascii.Error):
        return base64.b64decode(value.encode("ascii"), validate=True)
    raise MalformedRelease(f"log proof {field} is not valid base64")


@dataclass(frozen=True, slots=True)
class ReleaseLogProof:
    """Evidence that a release entry is in a log: a tree head plus an audit path."""

    log_id: bytes
    sth: SignedTreeHead
    leaf_index: int
    audit_path: tuple[bytes, ...]

    def to_json_bytes(self) -> bytes:
        body = {
            "log_id": base64.b64encode(self.log_id).decode("ascii"),
            "sth": self.sth.to_json_dict(),
            "leaf_index": self.leaf_index,
            "audit_path": [base64.b64encode(h).decode("ascii") for h in self.audit_path],
        }
        return json.dumps(body, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json_bytes(cls, data: bytes) -> ReleaseLogProof:
        if len(data) > MAX_LOG_PROOF_BYTES:
            raise MalformedRelease("log proof is too large")
        body: object = _NOT_JSON
        # RecursionError: deeply nested arrays fit well inside the size cap.
        with contextlib.suppress(UnicodeDecodeError, ValueError, RecursionError):
            body = json.loads(data.decode("utf-8"))
        if body is _NOT_JSON:
            # Raised outside the handler: JSONDecodeError keeps the document.
            raise MalformedRelease("log proof is not JSON")
        if not isinstance(body, dict) or set(body) != {"log_id", "sth", "leaf_index", "audit_path"}:
            raise MalformedRelease("log proof needs exactly log_id, sth, leaf_index, audit_path")
        index = body["leaf_index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_TREE_SIZE:
            raise MalformedRelease("log proof leaf_index is not an integer in range")
        path = body["audit_path"]
        if not isinstance(path, list) or len(path) > _MAX_AUDIT_PATH:
            raise MalformedRelease("log proof audit_path is not a short list")
        sth_body = body["sth"]
        if not isinstance(sth_body, dict):
            raise MalformedRelease("log proof sth is not an object")
        refusal: TlogError | None = None
        try:
            sth = SignedTreeHead.from_json_dict(sth_body)
        except TlogError as exc:
            refusal = exc
        if refusal is not None:
            raise MalformedRelease(f"log proof sth: {refusal}")
        return cls(
            log_id=_b64(body["log_id"], "log_id"),
            sth=sth,
            leaf_index=index,
            audit_path=tuple(_b64(h, "audit_path") for h in path),
        )


def verify_release_in_log(
    verified: VerifiedRelease, proof: ReleaseLogProof, log_public_key: bytes
) -> None:
    """Check that ``verified``'s entry is in the log pinned by ``log_public_key``
    (32-byte Ed25519); :class:`~protocol.release.NotInLog` otherwise."""
    refusal: TlogError | None = None
    try:
        expected_id = log_id(log_public_key)
        if not hmac.compare_digest(proof.log_id, expected_id):
            raise NotInLog("log proof names a different log than the pinned log key")
        verify_sth(proof.sth, log_public_key)
        verify_inclusion(
            leaf_hash(release_log_entry(verified)),
            proof.leaf_index,
            proof.sth.tree_size,
            list(proof.audit_path),
            proof.sth.root_hash,
        )
    except TlogError as exc:
        refusal = exc
    if refusal is not None:
        raise NotInLog(f"release version {verified.version} not proven in the log: {refusal}")


def release_log_proof(
    sth: SignedTreeHead, leaf_index: int, audit_path: Sequence[bytes], log_public_key: bytes
) -> ReleaseLogProof:
    """Assemble a proof document (the log operator's side)."""
    return ReleaseLogProof(log_id(log_public_key), sth, leaf_index, tuple(audit_path))
