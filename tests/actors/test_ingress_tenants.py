"""The tenants file and the API-key lookup: digests only, typed errors naming the entry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from actors.ingress import Tenant, TenantCheck, TenantStore, TenantStoreError, api_key_digest

KEY_A = b"mk-key-a-0001"
KEY_B = b"mk-key-b-0002"


def _entry(tenant_id: str, key: bytes) -> str:
    return f'[[tenants]]\nid = "{tenant_id}"\nkey_sha256 = "{hashlib.sha256(key).hexdigest()}"\n'


def test_a_tenants_file_authenticates_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(_entry("dev", KEY_A) + _entry("ops.team-2", KEY_B))
    store = TenantStore.load(path)
    assert len(store) == 2
    assert store.authenticate(KEY_A) == "dev"
    assert store.authenticate(KEY_B) == "ops.team-2"
    for wrong in (b"", KEY_A[:-1], KEY_A + b"x", KEY_A.upper(), b"x" * 10_000):
        assert store.authenticate(wrong) is None
    assert api_key_digest(KEY_A) == hashlib.sha256(KEY_A).digest()
    assert "key_sha256" not in repr(Tenant("t", b"\x00" * 32))


@pytest.mark.parametrize(
    ("text", "check", "entry"),
    [
        ("not toml [[", TenantCheck.SYNTAX, None),
        ("x = 1", TenantCheck.SYNTAX, None),
        ("tenants = []", TenantCheck.COUNT, None),
        (_entry("a", KEY_A) + '[[tenants]]\nid = "b"\n', TenantCheck.FIELD, 1),
        (
            _entry("a", KEY_A) + '[[tenants]]\nid = "b"\nkey_sha256 = "AB"\n',
            TenantCheck.KEY_DIGEST,
            1,
        ),
        (
            _entry("a", KEY_A) + f'[[tenants]]\nid = "b"\nkey_sha256 = "{"A" * 64}"\n',
            TenantCheck.KEY_DIGEST,
            1,
        ),
        (_entry("-bad", KEY_A), TenantCheck.TENANT_ID, 0),
        (_entry("a", KEY_A) + _entry("a", KEY_B), TenantCheck.DUPLICATE, 1),
        (_entry("a", KEY_A) + _entry("b", KEY_A), TenantCheck.DUPLICATE, 1),
        (
            _entry("a", KEY_A) + '[[tenants]]\nid = "b"\nkey_sha256 = "x"\nkey = "plain"\n',
            TenantCheck.FIELD,
            1,
        ),
    ],
)
def test_bad_files_name_the_check_and_the_entry(
    text: str, check: TenantCheck, entry: int | None
) -> None:
    with pytest.raises(TenantStoreError) as caught:
        TenantStore.from_toml(text.encode())
    assert (caught.value.check, caught.value.entry) == (check, entry)
    assert caught.value.__context__ is None
    if entry is not None:
        assert f"tenants[{entry}]" in str(caught.value)


def test_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(TenantStoreError) as caught:
        TenantStore.load(tmp_path / "missing.toml")
    assert caught.value.check is TenantCheck.FILE
    with pytest.raises(TenantStoreError) as caught:
        TenantStore.from_toml(b"#" * (2 * 1024 * 1024))
    assert caught.value.check is TenantCheck.FILE
    with pytest.raises(TenantStoreError) as caught:
        TenantStore.from_toml(b"\xff\xfe")
    assert caught.value.check is TenantCheck.SYNTAX
