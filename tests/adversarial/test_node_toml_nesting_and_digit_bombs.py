"""Attack: a ``node.toml`` that makes the TOML parser raise something untyped.

Both files are the operator's, read at start, and every problem with them is
meant to be a :class:`ConfigError` (exit 2, the check logged). Within the
256 KiB limit a file can nest arrays or inline tables a few thousand deep
(``tomllib`` recurses: ``RecursionError``) or hold an integer of 5 000 digits
(``int()`` refuses it: a plain ``ValueError``); neither is a
``TOMLDecodeError``, so both escaped ``load_config`` untyped. (The tenants
file's reader is attacked the same way in
``test_tenants_toml_nesting_and_digit_bombs.py``.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.daemon.config import ConfigCheck, ConfigError, load_config

CANARY = "canary-bomb-4e1f"

BOMBS = {
    "nested_arrays": "a = " + "[" * 5000 + "]" * 5000 + "\n",
    "nested_inline_tables": "a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n",
    "long_integer": "a = " + "9" * 5000 + "\n",
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_bombs_are_typed_syntax_errors(tmp_path: Path, bomb: str) -> None:
    path = tmp_path / "file.toml"
    path.write_text(f'node = "{CANARY}"\n' + BOMBS[bomb])
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.check is ConfigCheck.SYNTAX
    assert refused.value.__context__ is None
    assert CANARY not in str(refused.value)
