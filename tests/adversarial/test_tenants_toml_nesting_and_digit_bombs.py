"""Attack: a tenants file (``tenants.toml``, the operator's file on the
ingress node) nests arrays deeper than tomllib recurses, or holds an integer
of more digits than Python converts, so loading it raises ``RecursionError``
or a bare ``ValueError`` instead of the typed refusal the daemon reports as
a bad configuration.

Both are a :class:`TenantStoreError` with check ``syntax``, naming no value.
"""

from __future__ import annotations

import pytest

from actors.ingress import TenantCheck, TenantStore, TenantStoreError

_ENTRY = b'[[tenants]]\nid = "tenant-a"\nkey_sha256 = "' + b"0" * 64 + b'"\n'


@pytest.mark.parametrize(
    "data",
    [
        b"tenants = " + b"[" * 100_000,
        b"tenants = [{ id = " + b"{ a = " * 5_000,
        _ENTRY + b"extra = " + b"7" * 5_000 + b"\n",
        b"[[tenants]]\nid = " + b"9" * 10_000 + b"\n",
    ],
    ids=["arrays", "inline-tables", "digits", "digits-in-entry"],
)
def test_bombs_are_a_typed_syntax_refusal(data: bytes) -> None:
    with pytest.raises(TenantStoreError) as refused:
        TenantStore.from_toml(data)
    assert refused.value.check is TenantCheck.SYNTAX
    assert "7777" not in str(refused.value) and "9999" not in str(refused.value)
    assert refused.value.__context__ is None


def test_a_good_file_still_loads() -> None:
    assert len(TenantStore.from_toml(_ENTRY)) == 1
