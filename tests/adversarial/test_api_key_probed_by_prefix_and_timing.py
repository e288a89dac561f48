"""Attack: learn a tenant's API key, or which tenants exist, from how the
ingress answers wrong keys: a key that shares a prefix with a real one, a
key that is a prefix of one, or the time a lookup takes (a lookup that stops
at the first match, or compares the key byte by byte, answers faster for
some keys than for others).

The store holds SHA-256 digests only and compares the presented key's digest
with every tenant's digest through ``hmac.compare_digest``, whatever matched
before: the work is the same for every key, right or wrong, first tenant or
last. The test counts the comparisons (timing itself is too noisy to assert
on a shared machine) and checks the answers do not differ for near misses.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import pytest
from _ingress_kit import API_KEY, RunningIngress, running_ingress

from actors.ingress import Tenant, TenantStore

KEYS = [f"mk-tenant-{i:02d}-secret-value".encode() for i in range(16)]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    return calls


def test_every_lookup_compares_every_tenant_digest(counted: list[tuple[int, int]]) -> None:
    store = TenantStore(Tenant(f"t{i}", hashlib.sha256(k).digest()) for i, k in enumerate(KEYS))
    probes = [KEYS[0], KEYS[-1], KEYS[7], KEYS[0][:-1], KEYS[0] + b"0", b"mk-tenant-", b"z"]
    for probe in probes:
        counted.clear()
        store.authenticate(probe)
        assert len(counted) == len(KEYS), "the lookup stopped early or skipped tenants"
        assert set(counted) == {(32, 32)}, "compared something other than fixed-size digests"
    assert store.authenticate(KEYS[7]) == "t7"
    assert store.authenticate(KEYS[7][:-1]) is None


def test_the_store_never_holds_a_key_it_could_leak() -> None:
    store = TenantStore(Tenant(f"t{i}", hashlib.sha256(k).digest()) for i, k in enumerate(KEYS))
    dumped = repr(vars(store)) if hasattr(store, "__dict__") else repr(store)
    for key in KEYS:
        assert key.decode() not in dumped


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(tmp_path_factory.mktemp("ingress"))


def test_near_miss_keys_get_the_same_answer_as_random_ones(ingress: RunningIngress) -> None:
    answers = set()
    with ingress.http() as http:
        for probe in (
            API_KEY[:-1],
            API_KEY + "x",
            API_KEY[:8],
            "completely-unrelated",
            API_KEY.upper(),
        ):
            reply = http.get("/v1/models", headers={"authorization": f"Bearer {probe}"})
            answers.add((reply.status_code, reply.content, reply.headers.get("www-authenticate")))
        assert (
            http.get("/v1/models", headers={"authorization": f"Bearer {API_KEY}"}).status_code
            == 200
        )
    assert len(answers) == 1
    ((status, body, _),) = answers
    assert status == 401 and API_KEY[:8].encode() not in body
