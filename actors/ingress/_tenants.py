"""Tenants and their API keys, stored as SHA-256 digests only.

The file (``tenants.toml``) lists ``[[tenants]] id = "...", key_sha256 =
"<64 hex digits>"``; the plaintext keys are never on the node. A bearer key is
checked by hashing it and comparing the digest with *every* tenant's digest
with :func:`hmac.compare_digest`, with no early exit, so neither which tenant
matched nor how far a wrong key got shows in the time taken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import hmac
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Final

#: Upper bound on a tenants file.
MAX_TENANTS_FILE_BYTES: Final = 1024 * 1024
#: Upper bound on the number of tenants.
MAX_TENANTS: Final = 10_000
#: Upper bound on a presented API key (longer ones are refused before hashing).
MAX_API_KEY_BYTES: Final = 512
_TENANT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_DIGEST: Final = re.compile(r"[0-9a-f]{64}")


class TenantCheck(enum.StrEnum):
    """What is wrong with a tenants file."""

    #: The file is missing, unreadable or larger than the bound.
    FILE = "file"
    #: Not TOML, or not a ``tenants`` array of tables.
    SYNTAX = "syntax"
    #: An entry has a missing, mistyped or unknown field.
    FIELD = "field"
    #: An id is not 1-64 characters of ``[A-Za-z0-9._-]`` starting alphanumeric.
    TENANT_ID = "tenant_id"
    #: ``key_sha256`` is not 64 lowercase hex digits.
    KEY_DIGEST = "key_digest"
    #: Two entries share an id or a key digest.
    DUPLICATE = "duplicate"
    #: No tenants, or more than the bound.
    COUNT = "count"


class TenantStoreError(Exception):
    """The tenants file was refused; :attr:`check` names why, :attr:`entry`
    the index of the offending ``[[tenants]]`` entry (``None`` for the file)."""

    def __init__(self, check: TenantCheck, detail: str, *, entry: int | None = None) -> None:
        where = f"tenants[{entry}]: " if entry is not None else ""
        super().__init__(where + detail)
        self.check = check
        self.entry = entry


@dataclasses.dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    key_sha256: bytes = dataclasses.field(repr=False)


def api_key_digest(api_key: bytes) -> bytes:
    """SHA-256 of an API key, as ``key_sha256`` stores it (in hex)."""
    return hashlib.sha256(api_key).digest()


class TenantStore:
    """Looks a bearer key up among the tenants in constant time over all of them."""

    def __init__(self, tenants: Iterable[Tenant]) -> None:
        self._tenants = tuple(tenants)
        if not self._tenants:
            raise TenantStoreError(TenantCheck.COUNT, "at least one tenant is needed")
        ids = {t.id for t in self._tenants}
        digests = {t.key_sha256 for t in self._tenants}
        if len(ids) != len(self._tenants) or len(digests) != len(self._tenants):
            raise TenantStoreError(TenantCheck.DUPLICATE, "tenant ids and key digests are unique")

    def __len__(self) -> int:
        return len(self._tenants)

    def authenticate(self, api_key: bytes) -> str | None:
        """The id of the tenant whose key this is, or ``None``.

        Every tenant's digest is compared, whatever matched before, so the
        time depends on the number of tenants only.
        """
        if not 0 < len(api_key) <= MAX_API_KEY_BYTES:
            return None
        digest = api_key_digest(api_key)
        found: str | None = None
        for tenant in self._tenants:
            if hmac.compare_digest(digest, tenant.key_sha256):
                found = tenant.id
        return found

    @classmethod
    def from_toml(cls, data: bytes) -> TenantStore:
        """Parse a tenants file's bytes (:class:`TenantStoreError` naming the entry)."""
        if len(data) > MAX_TENANTS_FILE_BYTES:
            raise TenantStoreError(TenantCheck.FILE, "the tenants file is too large")
        parsed: dict[str, object] | None = None
        text: str | None = None
        with contextlib.suppress(UnicodeDecodeError):
            text = data.decode("utf-8")
        if text is not None:
            # ValueError: an integer of more digits than Python converts
            # (TOMLDecodeError is one too); RecursionError: arrays or inline
            # tables nested deeper than tomllib recurses. Both are a syntax
            # refusal, raised below, outside the handler.
            with contextlib.suppress(ValueError, RecursionError):
                parsed = tomllib.loads(text)
        if parsed is None:
            raise TenantStoreError(TenantCheck.SYNTAX, "the tenants file is not UTF-8 TOML")
        entries = parsed.get("tenants")
        if set(parsed) != {"tenants"} or not isinstance(entries, list):
            raise TenantStoreError(
                TenantCheck.SYNTAX, "the tenants file holds exactly one [[tenants]] array"
            )
        if not 0 < len(entries) <= MAX_TENANTS:
            raise TenantStoreError(TenantCheck.COUNT, f"1 to {MAX_TENANTS} tenants")
        tenants: list[Tenant] = []
        seen_ids: set[str] = set()
        seen_digests: set[bytes] = set()
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or set(entry) != {"id", "key_sha256"}:
                raise TenantStoreError(
                    TenantCheck.FIELD, "an entry has exactly id and key_sha256", entry=index
                )
            tenant_id, digest_hex = entry["id"], entry["key_sha256"]
            if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
                raise TenantStoreError(
                    TenantCheck.TENANT_ID,
                    "id is 1-64 characters of [A-Za-z0-9._-] starting alphanumeric",
                    entry=index,
                )
            if not isinstance(digest_hex, str) or not _HEX_DIGEST.fullmatch(digest_hex):
                raise TenantStoreError(
                    TenantCheck.KEY_DIGEST,
                    "key_sha256 is 64 lowercase hex digits (the SHA-256 of the key)",
                    entry=index,
                )
            digest = bytes.fromhex(digest_hex)
            if tenant_id in seen_ids or digest in seen_digests:
                raise TenantStoreError(
                    TenantCheck.DUPLICATE, "an id or key digest appears twice", entry=index
                )
            seen_ids.add(tenant_id)
            seen_digests.add(digest)
            tenants.append(Tenant(tenant_id, digest))
        return cls(tenants)

    @classmethod
    def load(cls, path: Path) -> TenantStore:
        """Read and parse a tenants file."""
        data: bytes | None = None
        try:
            with path.open("rb") as f:
                data = f.read(MAX_TENANTS_FILE_BYTES + 1)
        except OSError:
            pass
        if data is None:
            raise TenantStoreError(TenantCheck.FILE, "the tenants file cannot be read")
        return cls.from_toml(data)
