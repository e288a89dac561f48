"""RFC 9162 Merkle trees: hashing, proofs, and tree heads.

Generated proofs are checked against a direct transcription of the RFC's
recursive definitions (MTH, PATH, PROOF) over every small tree, and the
verifiers must refuse every single-bit alteration of entry, path or head.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.tlog import (
    EMPTY_ROOT_HASH,
    MAX_TREE_SIZE,
    InvalidProof,
    InvalidTreeHead,
    MalformedTlogData,
    MerkleTree,
    SignedTreeHead,
    decode_digitally_signed,
    encode_digitally_signed,
    leaf_hash,
    log_id,
    node_hash,
    sign_tree_head,
    tree_head_signing_input,
    verify_consistency,
    verify_inclusion,
    verify_sth,
)

# --- the RFC's recursive definitions, transcribed literally --------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def _entries(n: int) -> list[bytes]:
    return [f"entry-{i}".encode() for i in range(n)]


def _tree(entries: list[bytes]) -> MerkleTree:
    tree = MerkleTree()
    for e in entries:
        tree.append(e)
    return tree


def _flip(value: bytes, bit: int = 0) -> bytes:
    return bytes([value[0] ^ (1 << bit)]) + value[1:]


# --- hashing --------------------------------------------------------------------


def test_hash_domain_separation() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert MerkleTree().root_hash() == EMPTY_ROOT_HASH == hashlib.sha256(b"").digest()


def test_known_vector_from_rfc6962_test_data() -> None:
    # The eight-leaf tree used by the Certificate Transparency reference tests.
    leaves = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    tree = _tree(leaves)
    assert tree.root_hash(1).hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert tree.root_hash(8).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


@pytest.mark.parametrize("n", range(1, 34))
def test_roots_and_proofs_match_the_rfc_definitions(n: int) -> None:
    entries = _entries(n)
    tree = _tree(entries)
    for size in range(1, n + 1):
        assert tree.root_hash(size) == ref_mth(entries[:size])
        for m in range(size):
            assert tree.inclusion_proof(m, size) == ref_path(m, entries[:size])
        for first in range(1, size + 1):
            assert tree.consistency_proof(first, size) == ref_subproof(first, entries[:size], True)


# --- verification across many appends ------------------------------------------


def test_every_inclusion_and_consistency_proof_verifies_across_appends() -> None:
    tree = MerkleTree()
    roots: list[bytes] = []
    for i in range(70):
        tree.append(f"release-{i}".encode())
        roots.append(tree.root_hash())
    for size in range(1, 71):
        root = roots[size - 1]
        for m in range(size):
            verify_inclusion(
                leaf_hash(f"release-{m}".encode()), m, size, tree.inclusion_proof(m, size), root
            )
        for first in range(0, size + 1):
            first_root = roots[first - 1] if first else EMPTY_ROOT_HASH
            verify_consistency(first, size, first_root, root, tree.consistency_proof(first, size))


def test_inclusion_fails_for_an_altered_entry_index_path_or_root() -> None:
    tree = _tree(_entries(13))
    root = tree.root_hash()
    good_leaf = leaf_hash(b"entry-5")
    path = tree.inclusion_proof(5)
    verify_inclusion(good_leaf, 5, 13, path, root)
    with pytest.raises(InvalidProof):
        verify_inclusion(leaf_hash(b"entry-5-altered"), 5, 13, path, root)
    with pytest.raises(InvalidProof):
        verify_inclusion(good_leaf, 4, 13, path, root)
    # A proof fixes the tree's shape, not its exact size (sizes 13 and 14 share
    # a shape here; the tree head's signature binds size to root). A size of
    # another shape must fail.
    with pytest.raises(InvalidProof):
        verify_inclusion(good_leaf, 5, 8, path, root)
    with pytest.raises(InvalidProof):
        verify_inclusion(good_leaf, 5, 13, path, _flip(root))
    with pytest.raises(InvalidProof):
        verify_inclusion(good_leaf, 13, 13, path, root)
    for i in range(len(path)):
        altered = list(path)
        altered[i] = _flip(altered[i], i % 8)
        with pytest.raises(InvalidProof):
            verify_inclusion(good_leaf, 5, 13, altered, root)
    with pytest.raises(InvalidProof):
        verify_inclusion(good_leaf, 5, 13, path[:-1], root)
    with pytest.raises(InvalidProof):
        verify_inclusion(good_leaf, 5, 13, [*path, root], root)
    with pytest.raises(InvalidProof):
        verify_inclusion(good_leaf, 5, 13, [b"short", *path[1:]], root)


def test_consistency_fails_for_altered_heads_or_paths() -> None:
    tree = _tree(_entries(21))
    r7, r21 = tree.root_hash(7), tree.root_hash(21)
    proof = tree.consistency_proof(7, 21)
    verify_consistency(7, 21, r7, r21, proof)
    with pytest.raises(InvalidProof):
        verify_consistency(7, 21, _flip(r7), r21, proof)
    with pytest.raises(InvalidProof):
        verify_consistency(7, 21, r7, _flip(r21), proof)
    with pytest.raises(InvalidProof):
        verify_consistency(6, 21, r7, r21, proof)
    with pytest.raises(InvalidProof):
        verify_consistency(7, 40, r7, r21, proof)
    for i in range(len(proof)):
        altered = list(proof)
        altered[i] = _flip(altered[i], 7)
        with pytest.raises(InvalidProof):
            verify_consistency(7, 21, r7, r21, altered)
    with pytest.raises(InvalidProof):
        verify_consistency(7, 21, r7, r21, [])
    with pytest.raises(InvalidProof):
        verify_consistency(7, 21, r7, r21, proof[:-1])
    with pytest.raises(InvalidProof):
        verify_consistency(21, 7, r21, r7, proof)
    # A forked log: same size-7 prefix length but a different entry 3.
    forked = _entries(21)
    forked[3] = b"forged"
    fork = _tree(forked)
    with pytest.raises(InvalidProof):
        verify_consistency(7, 21, r7, fork.root_hash(21), fork.consistency_proof(7, 21))
    # Equal sizes and the empty tree.
    verify_consistency(21, 21, r21, r21, [])
    with pytest.raises(InvalidProof):
        verify_consistency(21, 21, r21, _flip(r21), [])
    with pytest.raises(InvalidProof):
        verify_consistency(0, 21, r21, r21, [])


def test_proof_edge_sizes_and_out_of_range_indices() -> None:
    one = _tree([b"only"])
    only = leaf_hash(b"only")
    # A one-leaf tree: the root is the leaf hash and the path is empty.
    verify_inclusion(only, 0, 1, [], one.root_hash())
    assert one.root_hash() == only
    for index, size, path in [
        (0, 0, []),  # the empty tree has no leaves
        (1, 1, []),  # index == size
        (-1, 1, []),
        (0, 1, [only]),  # a one-leaf tree has no siblings
        (0, MAX_TREE_SIZE + 1, []),
    ]:
        with pytest.raises(InvalidProof):
            verify_inclusion(only, index, size, path, only)
    with pytest.raises(InvalidProof):
        verify_inclusion(only, 0, 2, [only] * 65, only)  # longer than any tree's depth
    # Consistency from the empty tree and between equal sizes carries no hashes.
    verify_consistency(0, 0, EMPTY_ROOT_HASH, EMPTY_ROOT_HASH, [])
    verify_consistency(0, 1, EMPTY_ROOT_HASH, only, [])
    verify_consistency(1, 1, only, only, [])
    for first, second, first_root, second_root, path in [
        (0, 1, EMPTY_ROOT_HASH, only, [only]),
        (1, 1, only, only, [only]),
        (0, 0, only, only, []),  # "empty" tree with a non-empty root
        (-1, 1, only, only, []),
        (2, 1, only, only, [only]),
        (1, MAX_TREE_SIZE + 1, only, only, [only]),
    ]:
        with pytest.raises(InvalidProof):
            verify_consistency(first, second, first_root, second_root, path)
    with pytest.raises(ValueError):
        one.inclusion_proof(1, 1)
    with pytest.raises(ValueError):
        one.consistency_proof(2, 1)


@settings(max_examples=60, deadline=None)
@given(
    entries=st.lists(st.binary(max_size=16), min_size=1, max_size=40),
    data=st.data(),
)
def test_property_proofs_verify_and_any_bit_flip_is_caught(
    entries: list[bytes], data: st.DataObject
) -> None:
    tree = _tree(entries)
    size = data.draw(st.integers(1, len(entries)))
    m = data.draw(st.integers(0, size - 1))
    root = tree.root_hash(size)
    path = tree.inclusion_proof(m, size)
    verify_inclusion(leaf_hash(entries[m]), m, size, path, root)
    if path:
        i = data.draw(st.integers(0, len(path) - 1))
        bit = data.draw(st.integers(0, 7))
        bad = list(path)
        bad[i] = _flip(bad[i], bit)
        with pytest.raises(InvalidProof):
            verify_inclusion(leaf_hash(entries[m]), m, size, bad, root)
    first = data.draw(st.integers(1, size))
    proof = tree.consistency_proof(first, size)
    verify_consistency(first, size, tree.root_hash(first), root, proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = _flip(bad[i], data.draw(st.integers(0, 7)))
        with pytest.raises(InvalidProof):
            verify_consistency(first, size, tree.root_hash(first), root, bad)


# --- signed tree heads -----------------------------------------------------------


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_sth_sign_verify_roundtrip_and_rfc6962_shape() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    root = _tree(_entries(5)).root_hash()
    sth = sign_tree_head(key, 5, 1_700_000_000_123, root)
    verify_sth(sth, _raw_public(key))
    signing_input = tree_head_signing_input(5, 1_700_000_000_123, root)
    assert len(signing_input) == 50
    assert signing_input[:2] == b"\x00\x01"
    body = sth.to_json_dict()
    assert set(body) == {"tree_size", "timestamp", "sha256_root_hash", "tree_head_signature"}
    again = SignedTreeHead.from_json_dict(body)
    assert again == sth
    assert decode_digitally_signed(encode_digitally_signed(sth.signature)) == sth.signature
    assert len(log_id(_raw_public(key))) == 32


def test_sth_refuses_altered_fields_and_other_keys() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    root = _tree(_entries(5)).root_hash()
    sth = sign_tree_head(key, 5, 1000, root)
    for altered in (
        SignedTreeHead(6, 1000, root, sth.signature),
        SignedTreeHead(5, 1001, root, sth.signature),
        SignedTreeHead(5, 1000, _flip(root), sth.signature),
        SignedTreeHead(5, 1000, root, _flip(sth.signature)),
    ):
        with pytest.raises(InvalidTreeHead):
            verify_sth(altered, _raw_public(key))
    with pytest.raises(InvalidTreeHead):
        verify_sth(sth, _raw_public(other))
    with pytest.raises(InvalidTreeHead):
        verify_sth(sth, b"\x00" * 31)


@pytest.mark.parametrize(
    "mutation",
    [
        {"tree_size": -1},
        {"tree_size": True},
        {"tree_size": "5"},
        {"timestamp": 1 << 64},
        {"sha256_root_hash": "not base64!"},
        {"sha256_root_hash": "AAAA"},
        {"tree_head_signature": "AAAA"},
        {"tree_head_signature": None},
    ],
)
def test_sth_json_decoding_is_strict(mutation: dict[str, object]) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    body = sign_tree_head(key, 5, 1000, b"\x11" * 32).to_json_dict()
    body.update(mutation)
    with pytest.raises(MalformedTlogData):
        SignedTreeHead.from_json_dict(body)
    del body["timestamp"]
    with pytest.raises(MalformedTlogData):
        SignedTreeHead.from_json_dict(body)
