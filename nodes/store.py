"""The Store seam on SQLite (stdlib ``sqlite3``): files on real nodes, ``":memory:"``
in the simulator and tests, the same class in both (see :mod:`actors.seams.store`)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from actors.seams.store import Row, SqlValue, StoreError


class SqliteStore:
    """:class:`Store` on SQLite: a file for real nodes, ``":memory:"`` for simulation.

    One connection, guarded by a lock so worker threads (an HTTP server's
    handlers) can share it; a transaction holds the lock until it ends.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self._lock = threading.RLock()
        self._in_transaction = False
        self._read_only = read_only
        in_memory = str(path) == ":memory:"
        try:
            if read_only:
                if in_memory:
                    raise StoreError("an in-memory store cannot be opened read-only")
                target = Path(path)
                if not target.is_file():
                    raise StoreError(f"no database file at {target}")
                uri = target.resolve().as_uri() + "?mode=ro"
                self._conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self._conn = sqlite3.connect(
                    str(path), isolation_level=None, check_same_thread=False
                )
                if not in_memory:
                    self._conn.execute("PRAGMA journal_mode=WAL")
                    self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            # A connection that opened but refused a PRAGMA is not leaked.
            connection = getattr(self, "_conn", None)
            if connection is not None:
                connection.close()
            raise StoreError(f"cannot open database: {type(exc).__name__}") from exc

    @classmethod
    def in_memory(cls) -> SqliteStore:
        return cls(":memory:")

    @property
    def read_only(self) -> bool:
        return self._read_only

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> list[Row]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, tuple(params)).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"statement failed: {type(exc).__name__}: {exc}") from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[SqlValue]]) -> None:
        with self._lock:
            try:
                self._conn.executemany(sql, (tuple(r) for r in rows))
            except sqlite3.Error as exc:
                raise StoreError(f"statement failed: {type(exc).__name__}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._in_transaction:
                raise StoreError("transactions do not nest")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin transaction: {type(exc).__name__}: {exc}") from exc
            self._in_transaction = True
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise StoreError(f"commit failed: {type(exc).__name__}: {exc}") from exc
            finally:
                self._in_transaction = False

    def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (after a full disk or
        # an I/O error); a ROLLBACK then fails, and must not replace the error
        # that explains why the transaction ended.
        if self._conn.in_transaction:
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
