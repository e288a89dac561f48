"""The Store seam: a small SQL database for durable, append-mostly records.

Used by the transparency log and the audit log. Real nodes open a SQLite file
(WAL journal, full fsync on commit, so a published record survives a power
cut); the simulator and tests open ``":memory:"``. Both are the same
:class:`nodes.store.SqliteStore`, the stdlib ``sqlite3`` module underneath, so
the SQL a component writes is exercised identically in both composition roots.

Only typed scalar values cross this seam (:data:`SqlValue`); there is no way
to hand it objects to serialise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

SqlValue = int | float | str | bytes | None
Row = tuple[SqlValue, ...]


class StoreError(Exception):
    """The database refused an operation (missing file, read-only, corrupt)."""


class Store(Protocol):
    """A SQL store: statements with bound parameters, and transactions."""

    @property
    def read_only(self) -> bool:
        """True when writes are refused by the database itself."""
        ...

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> list[Row]:
        """Run one statement; return its rows (empty for writes)."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[SqlValue]]) -> None:
        """Run one write statement for each parameter row."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Context manager: the statements inside commit together or not at all.

        Writers are serialised (``BEGIN IMMEDIATE``), so a read-modify-write
        inside sees no concurrent appends, also across processes.
        """
        ...

    def close(self) -> None: ...
