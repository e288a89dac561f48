"""Transparency log, pure parts: RFC 9162 Merkle trees and RFC 6962 tree heads.

Public surface:

* Hashing: :func:`leaf_hash` (``SHA-256(0x00 || d)``), :func:`node_hash`
  (``SHA-256(0x01 || l || r)``), :data:`EMPTY_ROOT_HASH`.
* Trees and proofs: :class:`MerkleTree` (in memory), and the storage-agnostic
  :func:`range_hash`, :func:`inclusion_path`, :func:`consistency_path`,
  :func:`new_perfect_subtrees` driven by a :data:`PerfectSubtree` lookup.
* Verification: :func:`verify_inclusion`, :func:`verify_consistency`
  (RFC 9162 §2.1.3.2 / §2.1.4.2), raising :class:`InvalidProof`.
* Tree heads: :class:`SignedTreeHead`, :func:`sign_tree_head`,
  :func:`verify_sth` (Ed25519 over the RFC 6962 §3.5 structure), :func:`log_id`.

Every refusal is a :class:`TlogError` subclass.
"""

from protocol.tlog._errors import InvalidProof, InvalidTreeHead, MalformedTlogData, TlogError
from protocol.tlog._merkle import (
    EMPTY_ROOT_HASH,
    HASH_SIZE,
    MAX_TREE_SIZE,
    MerkleTree,
    PerfectSubtree,
    consistency_path,
    inclusion_path,
    leaf_hash,
    new_perfect_subtrees,
    node_hash,
    range_hash,
    root_from_inclusion_path,
    verify_consistency,
    verify_inclusion,
)
from protocol.tlog._sth import (
    ED25519_PUBLIC_KEY_SIZE,
    SignedTreeHead,
    decode_digitally_signed,
    encode_digitally_signed,
    log_id,
    sign_tree_head,
    tree_head_signing_input,
    verify_sth,
)

__all__ = [
    "ED25519_PUBLIC_KEY_SIZE",
    "EMPTY_ROOT_HASH",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "InvalidProof",
    "InvalidTreeHead",
    "MalformedTlogData",
    "MerkleTree",
    "PerfectSubtree",
    "SignedTreeHead",
    "TlogError",
    "consistency_path",
    "decode_digitally_signed",
    "encode_digitally_signed",
    "inclusion_path",
    "leaf_hash",
    "log_id",
    "new_perfect_subtrees",
    "node_hash",
    "range_hash",
    "root_from_inclusion_path",
    "sign_tree_head",
    "tree_head_signing_input",
    "verify_consistency",
    "verify_inclusion",
    "verify_sth",
]
