"""The trace recorder: every observable event of a run, hashed in order.

A record is one line ``<virtual time> <kind> <field> ...`` built only from
ints, strs, floats (``repr``: exact, shortest round-trip form, the same in
every process), bools, None and bytes (hex). Object reprs are refused: they
can contain memory addresses, which differ between processes and would make
equal runs hash differently. The SHA-256 over all lines identifies the run.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from typing import Final

_Field = int | str | float | bool | bytes | None
_REPR_TYPES: Final = frozenset({int, float, bool, type(None)})
_FLUSH_AT: Final = 2048


class TraceRecorder:
    def __init__(self, now: Callable[[], float], *, keep_last: int = 0) -> None:
        self._now = now
        self._hash = hashlib.sha256()
        self._lines: list[str] = []
        self.records = 0
        self.tail: deque[str] = deque(maxlen=keep_last)

    def record(self, kind: str, *fields: _Field) -> None:
        parts = [repr(self._now()), kind]
        for value in fields:
            value_type = type(value)
            if value_type is str:
                parts.append(value)  # type: ignore[arg-type]
            elif value_type in _REPR_TYPES:
                parts.append(repr(value))
            elif value_type is bytes:
                parts.append(value.hex())  # type: ignore[union-attr]
            else:
                raise TypeError(f"trace fields must be primitive, not {value_type.__name__}")
        parts.append("\n")
        line = " ".join(parts)
        self.records += 1
        lines = self._lines
        lines.append(line)
        if self.tail.maxlen:
            self.tail.append(line)
        if len(lines) >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        # Hashing the concatenation in chunks equals hashing it line by line.
        self._hash.update("".join(self._lines).encode())
        self._lines.clear()

    def hexdigest(self) -> str:
        self._flush()
        return self._hash.hexdigest()
