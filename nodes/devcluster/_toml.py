"""The small TOML subset the development cluster writes (no TOML writer ships with Python).

Only what ``node.toml`` and ``tenants.toml`` need: strings, integers,
booleans, arrays of those, arrays of inline tables, tables one level deep
and arrays of tables at the top level. Strings are written as TOML basic
strings through JSON's escaping, which TOML's basic strings accept (every
non-ASCII character is written as itself, so no surrogate escapes appear),
and DEL, which JSON leaves alone and TOML forbids, escaped.
Files written here are read back by :mod:`tomllib` in the tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TypeAlias

Scalar: TypeAlias = str | int | float | bool
Value: TypeAlias = Scalar | Sequence[Scalar] | Sequence[Mapping[str, Scalar]]
Table: TypeAlias = Mapping[str, Value]
Document: TypeAlias = Mapping[str, "Value | Table | Sequence[Table]"]


def _key(name: str) -> str:
    if name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        return name
    return json.dumps(name, ensure_ascii=False)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)  # "0.05", "1e-05": both TOML floats
    if isinstance(value, str):
        # JSON escapes every control character but DEL, which TOML also forbids.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    raise TypeError(f"no TOML form here for {type(value).__name__}")


def _value(value: object) -> str:
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return _scalar(value)


def _is_table_array(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(item, Mapping) for item in value)
    )


def dumps(document: Document) -> str:
    """``document`` as TOML: top-level values first, then its tables in order."""
    lines: list[str] = []
    tables: list[str] = []
    for name, value in document.items():
        if isinstance(value, Mapping):
            tables.append(f"\n[{_key(name)}]")
            tables.extend(f"{_key(k)} = {_value(v)}" for k, v in value.items())
        elif _is_table_array(value):
            assert isinstance(value, Sequence)
            for item in value:
                assert isinstance(item, Mapping)
                tables.append(f"\n[[{_key(name)}]]")
                tables.extend(f"{_key(k)} = {_value(v)}" for k, v in item.items())
        else:
            lines.append(f"{_key(name)} = {_value(value)}")
    return "\n".join([*lines, *tables]) + "\n"
