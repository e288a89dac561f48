"""RFC 9162 §2.1 Merkle tree hashing, proof generation and proof verification.

Hashing (SHA-256, domain-separated so a leaf can never pose as a node):

* leaf:      ``MTH({d}) = SHA-256(0x00 || d)``
* interior:  ``SHA-256(0x01 || left || right)``
* empty:     ``SHA-256("")``

Storage model. A log that only appends owns, at every moment, a set of
*perfect* subtrees: ranges of ``2**level`` leaves starting at a multiple of
``2**level``. Once complete they never change, so a store can keep each one
under ``(level, index)`` and compute any hash the RFC's recursion asks for
from ``O(log n)`` of them. The functions here take that lookup as a callable
(:data:`PerfectSubtree`) so the same code drives the in-memory
:class:`MerkleTree` and the SQLite-backed log in ``nodes/tlog``.

Verification follows the iterative algorithms of RFC 9162 §2.1.3.2
(inclusion) and §2.1.4.2 (consistency) exactly; failures raise
:class:`~protocol.tlog.InvalidProof` naming the failed check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from protocol.tlog._errors import InvalidProof

HASH_SIZE = 32
EMPTY_ROOT_HASH = hashlib.sha256(b"").digest()

# A tree of more than 2**63 leaves is not a thing this log will meet; capping
# sizes here keeps every proof length bounded (at most 64 or 128 hashes).
MAX_TREE_SIZE = (1 << 63) - 1
_MAX_INCLUSION_PATH = 64
_MAX_CONSISTENCY_PATH = 128

PerfectSubtree = Callable[[int, int], bytes]
"""``(level, index) -> hash`` of leaves ``[index * 2**level, (index+1) * 2**level)``."""


def leaf_hash(leaf_input: bytes) -> bytes:
    """The RFC 9162 leaf hash ``SHA-256(0x00 || leaf_input)``."""
    return hashlib.sha256(b"\x00" + leaf_input).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split_point(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (``size >= 2``)."""
    return 1 << ((size - 1).bit_length() - 1)


def range_hash(start: int, end: int, perfect: PerfectSubtree) -> bytes:
    """``MTH(D[start:end])`` assembled from perfect subtrees.

    A range that is itself a perfect, aligned subtree is one lookup; any other
    range splits where RFC 9162 splits it (at the largest power of two below
    its size), so the result equals the RFC's definition for every range.
    """
    size = end - start
    if size <= 0:
        if size == 0 and start == 0:
            return EMPTY_ROOT_HASH
        raise ValueError("empty or inverted leaf range")
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        return perfect(level, start >> level)
    k = _split_point(size)
    return node_hash(range_hash(start, start + k, perfect), range_hash(start + k, end, perfect))


def new_perfect_subtrees(
    leaf_index: int, leaf_hash_value: bytes, perfect: PerfectSubtree
) -> list[tuple[int, int, bytes]]:
    """The perfect subtrees completed by appending leaf ``leaf_index``.

    Returns ``(level, index, hash)`` triples, the leaf itself first. The leaf
    completes one subtree per trailing one-bit of its index: each time the
    node just formed is a right child, its left sibling is already stored.
    """
    out = [(0, leaf_index, leaf_hash_value)]
    level, index, current = 0, leaf_index, leaf_hash_value
    while index & 1:
        current = node_hash(perfect(level, index - 1), current)
        level += 1
        index >>= 1
        out.append((level, index, current))
    return out


def inclusion_path(leaf_index: int, tree_size: int, perfect: PerfectSubtree) -> list[bytes]:
    """RFC 9162 §2.1.3.1 ``PATH(m, D[n])``: sibling hashes, leaf level first."""
    if not 0 <= leaf_index < tree_size <= MAX_TREE_SIZE:
        raise ValueError("leaf index outside the tree")
    siblings: list[bytes] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        k = _split_point(hi - lo)
        if leaf_index < lo + k:
            siblings.append(range_hash(lo + k, hi, perfect))
            hi = lo + k
        else:
            siblings.append(range_hash(lo, lo + k, perfect))
            lo = lo + k
    # Collected root-down; the RFC orders the path from the leaf up.
    siblings.reverse()
    return siblings


def consistency_path(first: int, second: int, perfect: PerfectSubtree) -> list[bytes]:
    """RFC 9162 §2.1.4.1 ``PROOF(m, D[n])`` between tree sizes ``first <= second``.

    The proof between equal sizes, and from the empty tree, is empty.
    """
    if not 0 <= first <= second <= MAX_TREE_SIZE:
        raise ValueError("consistency needs 0 <= first <= second")
    if first in (0, second):
        return []
    nodes: list[bytes] = []
    lo, hi = 0, second
    # ``whole`` is the RFC's flag b: true while the old tree's root is a
    # node on the path we walk, in which case the verifier already knows it.
    whole = True
    while True:
        m, n = first - lo, hi - lo
        if m == n:
            if not whole:
                nodes.append(range_hash(lo, hi, perfect))
            break
        k = _split_point(n)
        if m <= k:
            nodes.append(range_hash(lo + k, hi, perfect))
            hi = lo + k
        else:
            nodes.append(range_hash(lo, lo + k, perfect))
            lo = lo + k
            whole = False
    nodes.reverse()
    return nodes


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise InvalidProof(f"{what} is not a {HASH_SIZE}-byte SHA-256 value")


def _check_path(path: Sequence[bytes], limit: int) -> None:
    if len(path) > limit:
        raise InvalidProof(f"proof has {len(path)} hashes, more than any tree needs")
    for position, value in enumerate(path):
        _check_hash(value, f"proof hash {position}")


def root_from_inclusion_path(
    leaf_hash_value: bytes, leaf_index: int, tree_size: int, path: Sequence[bytes]
) -> bytes:
    """The root an inclusion path leads to (RFC 9162 §2.1.3.2, steps 1-3)."""
    _check_hash(leaf_hash_value, "leaf hash")
    _check_path(path, _MAX_INCLUSION_PATH)
    if not 0 <= leaf_index < tree_size <= MAX_TREE_SIZE:
        raise InvalidProof("leaf index is not inside the tree size")
    fn, sn, r = leaf_index, tree_size - 1, leaf_hash_value
    for p in path:
        if sn == 0:
            raise InvalidProof("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    leaf_hash_value: bytes,
    leaf_index: int,
    tree_size: int,
    path: Sequence[bytes],
    root_hash: bytes,
) -> None:
    """Check that ``leaf_hash_value`` is leaf ``leaf_index`` of the tree
    ``(tree_size, root_hash)``; :class:`InvalidProof` otherwise."""
    _check_hash(root_hash, "root hash")
    computed = root_from_inclusion_path(leaf_hash_value, leaf_index, tree_size, path)
    if computed != root_hash:
        raise InvalidProof("inclusion proof does not lead to the tree head's root hash")


def verify_consistency(
    first_size: int,
    second_size: int,
    first_root: bytes,
    second_root: bytes,
    path: Sequence[bytes],
) -> None:
    """Check that tree ``(first_size, first_root)`` is a prefix of tree
    ``(second_size, second_root)`` (RFC 9162 §2.1.4.2); :class:`InvalidProof`
    otherwise."""
    _check_hash(first_root, "first root hash")
    _check_hash(second_root, "second root hash")
    _check_path(path, _MAX_CONSISTENCY_PATH)
    if not 0 <= first_size <= second_size <= MAX_TREE_SIZE:
        raise InvalidProof("consistency needs 0 <= first size <= second size")
    if first_size == 0:
        # Every tree extends the empty tree; a proof here carries nothing.
        if path:
            raise InvalidProof("consistency proof from the empty tree must be empty")
        if first_root != EMPTY_ROOT_HASH:
            raise InvalidProof("first root hash is not the empty tree's hash")
        return
    if first_size == second_size:
        if path:
            raise InvalidProof("consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise InvalidProof("equal tree sizes with different root hashes")
        return
    if not path:
        raise InvalidProof("consistency proof is empty")
    nodes = list(path)
    if first_size & (first_size - 1) == 0:
        # The old tree is a perfect subtree of the new one: its root is a
        # path node the prover leaves out because the verifier holds it.
        nodes.insert(0, first_root)
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise InvalidProof("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("consistency proof is shorter than the tree is deep")
    if fr != first_root:
        raise InvalidProof("consistency proof does not reproduce the first root hash")
    if sr != second_root:
        raise InvalidProof("consistency proof does not reproduce the second root hash")


class MerkleTree:
    """An append-only Merkle tree held in memory (tests, the simulator, tooling).

    Keeps every perfect subtree by level; the SQLite log in ``nodes/tlog``
    stores the same ``(level, index)`` hashes in a table instead.
    """

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]

    def __len__(self) -> int:
        return len(self._levels[0])

    def _perfect(self, level: int, index: int) -> bytes:
        return self._levels[level][index]

    def append(self, leaf_input: bytes) -> int:
        """Add a leaf; return its index."""
        return self.append_leaf_hash(leaf_hash(leaf_input))

    def append_leaf_hash(self, leaf_hash_value: bytes) -> int:
        """Add a leaf by its leaf hash; return its index."""
        index = len(self._levels[0])
        for level, position, value in new_perfect_subtrees(index, leaf_hash_value, self._perfect):
            if level == len(self._levels):
                self._levels.append([])
            assert len(self._levels[level]) == position
            self._levels[level].append(value)
        return index

    def leaf_hash_at(self, index: int) -> bytes:
        return self._levels[0][index]

    def _check_size(self, tree_size: int) -> None:
        if not 0 <= tree_size <= len(self):
            raise ValueError("tree size beyond the current tree")

    def root_hash(self, tree_size: int | None = None) -> bytes:
        """``MTH`` of the first ``tree_size`` leaves (default: all)."""
        size = len(self) if tree_size is None else tree_size
        self._check_size(size)
        return range_hash(0, size, self._perfect)

    def inclusion_proof(self, leaf_index: int, tree_size: int | None = None) -> list[bytes]:
        size = len(self) if tree_size is None else tree_size
        self._check_size(size)
        return inclusion_path(leaf_index, size, self._perfect)

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        size = len(self) if second is None else second
        self._check_size(size)
        return consistency_path(first, size, self._perfect)
