"""The transparency log's durable side: RFC 9162 tree in a :class:`Store`.

Tables (created on first open by a writer):

* ``tlog_meta(key, value)`` — the log's Ed25519 public key (32 bytes). A log
  is opened only with the key it was created with.
* ``tlog_leaves(idx, leaf_hash, leaf_input)`` — entries in order; a unique
  index on ``leaf_hash`` makes appends idempotent and backs proof-by-hash.
* ``tlog_nodes(level, idx, hash)`` — every perfect subtree (level 0 = leaf
  hashes). Written once when completed, never updated; any root or proof is
  computed from ``O(log n)`` of them per range (see ``protocol.tlog``).
* ``tlog_heads(tree_size, timestamp_ms, root_hash, signature)`` — signed
  tree heads. Each append signs a head in the same transaction as its leaf,
  so the newest head always covers every stored entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from actors.seams.clock import WallClock
from actors.seams.store import SqlValue, Store
from protocol.tlog import (
    MAX_TREE_SIZE,
    SignedTreeHead,
    TlogError,
    consistency_path,
    inclusion_path,
    leaf_hash,
    new_perfect_subtrees,
    range_hash,
    sign_tree_head,
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tlog_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tlog_leaves ("
    " idx INTEGER PRIMARY KEY, leaf_hash BLOB NOT NULL, leaf_input BLOB NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS tlog_leaves_by_hash ON tlog_leaves (leaf_hash)",
    "CREATE TABLE IF NOT EXISTS tlog_nodes ("
    " level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
    " PRIMARY KEY (level, idx)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS tlog_heads ("
    " tree_size INTEGER PRIMARY KEY, timestamp_ms INTEGER NOT NULL,"
    " root_hash BLOB NOT NULL, signature BLOB NOT NULL)",
)
MAX_LEAF_INPUT = 64 * 1024


class LogStoreError(TlogError):
    """The stored log is unusable (missing tables, another log's key, no head)."""


class LogRequestError(TlogError):
    """A query the log cannot answer: size or index out of range, unknown leaf."""


@dataclass(frozen=True, slots=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    audit_path: tuple[bytes, ...]


def public_key_bytes(signing_key: Ed25519PrivateKey) -> bytes:
    return signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _blob(value: SqlValue) -> bytes:
    if not isinstance(value, bytes):
        raise LogStoreError("stored value has the wrong type")
    return value


def _int(value: SqlValue) -> int:
    if not isinstance(value, int):
        raise LogStoreError("stored value has the wrong type")
    return value


class TransparencyLog:
    """An append-only RFC 9162 log over a :class:`Store`.

    ``signing_key`` is required to append (and to create a new log); a
    read-only server opens the store without it. ``public_key`` pins which
    log this store must be when no signing key is given.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: WallClock,
        signing_key: Ed25519PrivateKey | None = None,
        public_key: bytes | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._signing_key = signing_key
        if signing_key is not None:
            derived = public_key_bytes(signing_key)
            if public_key is not None and public_key != derived:
                raise LogStoreError("signing key and pinned public key differ")
            public_key = derived
            if not store.read_only:
                self._create(derived)
        rows = self._query("SELECT value FROM tlog_meta WHERE key = 'public_key'")
        if not rows:
            raise LogStoreError("store holds no log (create it with a signing key)")
        stored_key = _blob(rows[0][0])
        if public_key is not None and stored_key != public_key:
            raise LogStoreError("store belongs to a log with a different key")
        self._public_key = stored_key

    def _query(self, sql: str, params: Sequence[SqlValue] = ()) -> list[tuple[SqlValue, ...]]:
        failure = ""
        try:
            return self._store.execute(sql, params)
        except Exception as exc:
            failure = type(exc).__name__
        # Raised outside the handler: the store's exception stays behind.
        raise LogStoreError(f"log store query failed: {failure}")

    def _create(self, public_key: bytes) -> None:
        with self._store.transaction():
            for statement in _SCHEMA:
                self._store.execute(statement)
            rows = self._store.execute("SELECT value FROM tlog_meta WHERE key = 'public_key'")
            if not rows:
                self._store.execute(
                    "INSERT INTO tlog_meta (key, value) VALUES ('public_key', ?)", (public_key,)
                )
                self._sign_head(0)

    @property
    def public_key(self) -> bytes:
        """The log's 32-byte Ed25519 public key (pin this in clients)."""
        return self._public_key

    # -- reading -----------------------------------------------------------------

    @property
    def size(self) -> int:
        rows = self._query("SELECT COALESCE(MAX(idx) + 1, 0) FROM tlog_leaves")
        return _int(rows[0][0])

    def _perfect(self, level: int, index: int) -> bytes:
        rows = self._query(
            "SELECT hash FROM tlog_nodes WHERE level = ? AND idx = ?", (level, index)
        )
        if not rows:
            raise LogStoreError(f"stored tree lacks node ({level}, {index})")
        return _blob(rows[0][0])

    def _check_tree_size(self, tree_size: int, *, allow_empty: bool) -> None:
        low = 0 if allow_empty else 1
        if not low <= tree_size <= self.size:
            raise LogRequestError(f"tree size {tree_size} is outside 0..{self.size}")

    def root_hash(self, tree_size: int | None = None) -> bytes:
        size = self.size if tree_size is None else tree_size
        self._check_tree_size(size, allow_empty=True)
        return range_hash(0, size, self._perfect)

    def sth(self) -> SignedTreeHead:
        """The newest signed tree head."""
        rows = self._query(
            "SELECT tree_size, timestamp_ms, root_hash, signature FROM tlog_heads"
            " ORDER BY tree_size DESC LIMIT 1"
        )
        if not rows:
            raise LogStoreError("log has no signed tree head")
        size, timestamp, root, signature = rows[0]
        return SignedTreeHead(_int(size), _int(timestamp), _blob(root), _blob(signature))

    def tree_heads(self) -> list[SignedTreeHead]:
        """Every stored signed tree head, oldest first (for audits)."""
        rows = self._query(
            "SELECT tree_size, timestamp_ms, root_hash, signature FROM tlog_heads"
            " ORDER BY tree_size"
        )
        return [
            SignedTreeHead(_int(size), _int(ts), _blob(root), _blob(sig))
            for size, ts, root, sig in rows
        ]

    def index_of(self, leaf_hash_value: bytes) -> int | None:
        rows = self._query("SELECT idx FROM tlog_leaves WHERE leaf_hash = ?", (leaf_hash_value,))
        return _int(rows[0][0]) if rows else None

    def inclusion_proof(self, leaf_hash_value: bytes, tree_size: int) -> InclusionProof:
        """Audit path for the leaf with this hash in the tree of ``tree_size``."""
        self._check_tree_size(tree_size, allow_empty=False)
        index = self.index_of(leaf_hash_value)
        if index is None or index >= tree_size:
            raise LogRequestError(f"no leaf with that hash in the first {tree_size} entries")
        return InclusionProof(
            index, tree_size, tuple(inclusion_path(index, tree_size, self._perfect))
        )

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 consistency proof between tree sizes ``first <= second``."""
        self._check_tree_size(second, allow_empty=True)
        if not 0 <= first <= second:
            raise LogRequestError("consistency needs 0 <= first <= second")
        return consistency_path(first, second, self._perfect)

    def entries(self, start: int, end: int) -> list[bytes]:
        """``leaf_input`` of entries ``start`` through ``end`` **inclusive**
        (the convention of RFC 6962 ``get-entries``)."""
        if not 0 <= start <= end < self.size:
            raise LogRequestError(f"entry range {start}..{end} is outside 0..{self.size - 1}")
        rows = self._query(
            "SELECT leaf_input FROM tlog_leaves WHERE idx BETWEEN ? AND ? ORDER BY idx",
            (start, end),
        )
        return [_blob(r[0]) for r in rows]

    # -- appending ----------------------------------------------------------------

    def append(self, leaf_input: bytes) -> int:
        """Append an entry and sign the new tree head; return the entry's index.

        Appending an entry already present returns its existing index.
        """
        return self.append_many([leaf_input])[0]

    def append_many(self, leaf_inputs: Sequence[bytes]) -> list[int]:
        """Append entries in one transaction with one new signed tree head."""
        if self._signing_key is None:
            raise LogStoreError("this log was opened without its signing key")
        for leaf_input in leaf_inputs:
            if not isinstance(leaf_input, bytes) or not 0 < len(leaf_input) <= MAX_LEAF_INPUT:
                raise LogRequestError(f"entries must be 1..{MAX_LEAF_INPUT} bytes")
        indices: list[int] = []
        with self._store.transaction():
            size = self.size
            start = size
            for leaf_input in leaf_inputs:
                hashed = leaf_hash(leaf_input)
                existing = self.index_of(hashed)
                if existing is not None:
                    indices.append(existing)
                    continue
                if size >= MAX_TREE_SIZE:
                    raise LogRequestError("log is full")
                self._store.execute(
                    "INSERT INTO tlog_leaves (idx, leaf_hash, leaf_input) VALUES (?, ?, ?)",
                    (size, hashed, leaf_input),
                )
                self._store.executemany(
                    "INSERT INTO tlog_nodes (level, idx, hash) VALUES (?, ?, ?)",
                    new_perfect_subtrees(size, hashed, self._perfect),
                )
                indices.append(size)
                size += 1
            if size != start:
                self._sign_head(size)
        return indices

    def _sign_head(self, tree_size: int) -> None:
        assert self._signing_key is not None
        rows = self._store.execute("SELECT MAX(timestamp_ms) FROM tlog_heads")
        previous = rows[0][0]
        # Timestamps never go backwards even if the wall clock does.
        timestamp = max(self._clock.wall_ms(), previous if isinstance(previous, int) else 0)
        sth = sign_tree_head(
            self._signing_key, tree_size, timestamp, range_hash(0, tree_size, self._perfect)
        )
        self._store.execute(
            "INSERT INTO tlog_heads (tree_size, timestamp_ms, root_hash, signature)"
            " VALUES (?, ?, ?, ?)",
            (sth.tree_size, sth.timestamp_ms, sth.root_hash, sth.signature),
        )
