"""The SQLite-backed transparency log and its RFC 6962 §4 HTTP view."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.seams.store import StoreError
from nodes.store import SqliteStore
from nodes.tlog import (
    LogRequestError,
    LogStoreError,
    TlogHttpApp,
    TransparencyLog,
    public_key_bytes,
    serve_tlog,
)
from protocol.tlog import (
    EMPTY_ROOT_HASH,
    InvalidProof,
    MerkleTree,
    SignedTreeHead,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
    verify_sth,
)

KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)


class StepClock:
    """Wall time that advances one millisecond per reading."""

    def __init__(self) -> None:
        self.now = 1_900_000_000_000

    def wall_ms(self) -> int:
        self.now += 1
        return self.now


def _log(entries: int = 0) -> TransparencyLog:
    log = TransparencyLog(SqliteStore.in_memory(), clock=StepClock(), signing_key=KEY)
    for i in range(entries):
        log.append(f"entry-{i}".encode())
    return log


# --- the store-backed log ------------------------------------------------------------


def test_empty_log_has_a_signed_empty_head() -> None:
    log = _log()
    sth = log.sth()
    assert (sth.tree_size, sth.root_hash) == (0, EMPTY_ROOT_HASH)
    verify_sth(sth, public_key_bytes(KEY))


def test_appends_match_the_in_memory_tree_and_all_proofs_verify() -> None:
    log = _log()
    reference = MerkleTree()
    heads: list[SignedTreeHead] = []
    for i in range(40):
        entry = f"entry-{i}".encode()
        assert log.append(entry) == i == reference.append(entry)
        heads.append(log.sth())
    for head in heads:
        verify_sth(head, log.public_key)
        assert head.root_hash == reference.root_hash(head.tree_size)
        for m in range(head.tree_size):
            proof = log.inclusion_proof(leaf_hash(f"entry-{m}".encode()), head.tree_size)
            assert proof.leaf_index == m
            verify_inclusion(
                leaf_hash(f"entry-{m}".encode()),
                m,
                head.tree_size,
                proof.audit_path,
                head.root_hash,
            )
    for a in heads[::3]:
        for b in heads[::4]:
            if a.tree_size <= b.tree_size:
                proof = log.consistency_proof(a.tree_size, b.tree_size)
                verify_consistency(a.tree_size, b.tree_size, a.root_hash, b.root_hash, proof)
    assert [h.tree_size for h in log.tree_heads()] == list(range(41))
    assert log.entries(3, 5) == [b"entry-3", b"entry-4", b"entry-5"]


def test_append_is_idempotent_and_batches_sign_one_head() -> None:
    log = _log(3)
    assert log.append(b"entry-1") == 1
    assert log.size == 3
    assert log.append_many([b"a", b"b", b"entry-0", b"c"]) == [3, 4, 0, 5]
    assert [h.tree_size for h in log.tree_heads()] == [0, 1, 2, 3, 6]


def test_altered_entry_does_not_verify_against_the_log() -> None:
    log = _log(10)
    sth = log.sth()
    proof = log.inclusion_proof(leaf_hash(b"entry-4"), sth.tree_size)
    with pytest.raises(InvalidProof):
        verify_inclusion(leaf_hash(b"entry-4!"), 4, sth.tree_size, proof.audit_path, sth.root_hash)


def test_requests_out_of_range_are_typed_errors() -> None:
    log = _log(5)
    with pytest.raises(LogRequestError):
        log.inclusion_proof(leaf_hash(b"absent"), 5)
    with pytest.raises(LogRequestError):
        log.inclusion_proof(leaf_hash(b"entry-4"), 4)  # entry 4 is not in the first 4
    with pytest.raises(LogRequestError):
        log.inclusion_proof(leaf_hash(b"entry-1"), 6)
    with pytest.raises(LogRequestError):
        log.consistency_proof(3, 6)
    with pytest.raises(LogRequestError):
        log.consistency_proof(4, 3)
    with pytest.raises(LogRequestError):
        log.entries(4, 5)
    with pytest.raises(LogRequestError):
        log.append(b"")


class FailingClock:
    """Wall time that fails on demand, part-way through an append."""

    def __init__(self) -> None:
        self.fail = False

    def wall_ms(self) -> int:
        if self.fail:
            raise RuntimeError("clock unavailable")
        return 1_900_000_000_000


def test_failed_append_leaves_no_entry_node_or_head(tmp_path: Path) -> None:
    clock = FailingClock()
    store = SqliteStore(tmp_path / "tlog.sqlite")
    log = TransparencyLog(store, clock=clock, signing_key=KEY)
    log.append_many([b"a", b"b", b"c"])
    before = (log.size, log.sth(), log.tree_heads())
    nodes_before = store.execute("SELECT COUNT(*) FROM tlog_nodes")
    clock.fail = True  # the head is signed last, after leaves and nodes were written
    with pytest.raises(RuntimeError):
        log.append_many([b"d", b"e"])
    assert (log.size, log.sth(), log.tree_heads()) == before
    assert store.execute("SELECT COUNT(*) FROM tlog_nodes") == nodes_before
    clock.fail = False
    assert log.append(b"d") == 3  # the store is usable and the index was not burnt


def test_store_transactions_commit_together_or_not_at_all() -> None:
    store = SqliteStore.in_memory()
    store.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError), store.transaction():
        store.execute("INSERT INTO t (v) VALUES (1)")
        store.execute("INSERT INTO t (v) VALUES (1)")  # constraint failure
    assert store.execute("SELECT v FROM t") == []
    with pytest.raises(StoreError, match="do not nest"), store.transaction(), store.transaction():
        pass
    with store.transaction():
        store.executemany("INSERT INTO t (v) VALUES (?)", [(1,), (2,)])
    assert store.execute("SELECT v FROM t ORDER BY v") == [(1,), (2,)]


def test_file_store_reopens_read_only_and_pins_the_key(tmp_path: Path) -> None:
    db = tmp_path / "tlog.sqlite"
    writer = TransparencyLog(SqliteStore(db), clock=StepClock(), signing_key=KEY)
    for i in range(7):
        writer.append(f"e{i}".encode())
    reader = TransparencyLog(
        SqliteStore(db, read_only=True), clock=StepClock(), public_key=public_key_bytes(KEY)
    )
    assert reader.sth() == writer.sth()
    with pytest.raises(LogStoreError):
        reader.append(b"nope")
    other = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
    with pytest.raises(LogStoreError, match="different key"):
        TransparencyLog(
            SqliteStore(db, read_only=True), clock=StepClock(), public_key=public_key_bytes(other)
        )
    with pytest.raises(LogStoreError, match="different key"):
        TransparencyLog(SqliteStore(db), clock=StepClock(), signing_key=other)
    with pytest.raises(StoreError):
        SqliteStore(tmp_path / "absent.sqlite", read_only=True)


# --- HTTP ---------------------------------------------------------------------------

pytestmark = pytest.mark.anyio


async def _get(app: TlogHttpApp, target: str, method: str = "GET") -> tuple[int, Any]:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://tlog") as client:
        response = await client.request(method, target)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, json.loads(response.content)


async def test_http_routes_answer_in_rfc6962_shape_and_verify() -> None:
    log = _log(12)
    app = TlogHttpApp(log)
    status, body = await _get(app, "/ct/v1/get-sth")
    assert status == 200
    sth = SignedTreeHead.from_json_dict(body)
    verify_sth(sth, log.public_key)
    assert sth.tree_size == 12

    target = base64.b64encode(leaf_hash(b"entry-7")).decode()
    status, body = await _get(
        app, f"/ct/v1/get-proof-by-hash?hash={target.replace('+', '%2B')}&tree_size=12"
    )
    assert status == 200 and body["leaf_index"] == 7
    path = [base64.b64decode(h) for h in body["audit_path"]]
    verify_inclusion(leaf_hash(b"entry-7"), 7, 12, path, sth.root_hash)

    status, body = await _get(app, "/ct/v1/get-sth-consistency?first=5&second=12")
    assert status == 200
    verify_consistency(
        5, 12, log.root_hash(5), sth.root_hash, [base64.b64decode(h) for h in body["consistency"]]
    )

    status, body = await _get(app, "/ct/v1/get-entries?start=10&end=99")
    assert status == 200
    leaves = [base64.b64decode(e["leaf_input"]) for e in body["entries"]]
    assert leaves == [b"entry-10", b"entry-11"]
    assert all(e["extra_data"] == "" for e in body["entries"])


async def test_get_entries_is_capped() -> None:
    app = TlogHttpApp(_log(20), max_entries=4)
    status, body = await _get(app, "/ct/v1/get-entries?start=0&end=19")
    assert status == 200 and len(body["entries"]) == 4


HOSTILE = [
    "/ct/v1/get-entries",
    "/ct/v1/get-entries?start=1",
    "/ct/v1/get-entries?start=5&end=2",
    "/ct/v1/get-entries?start=-1&end=2",
    "/ct/v1/get-entries?start=1&end=2&start=1",
    "/ct/v1/get-entries?start=1&end=2&extra=3",
    "/ct/v1/get-entries?start=99999999999999999999&end=1",
    "/ct/v1/get-entries?start=0x1&end=2",
    "/ct/v1/get-entries?start=1e3&end=2",
    "/ct/v1/get-entries?start=%20%31&end=2",
    "/ct/v1/get-entries?start=%ff&end=2",
    "/ct/v1/get-entries?start&end",
    "/ct/v1/get-entries?start=500&end=600",
    "/ct/v1/get-proof-by-hash?hash=@@@&tree_size=3",
    "/ct/v1/get-proof-by-hash?hash=AAAA&tree_size=3",
    f"/ct/v1/get-proof-by-hash?hash={base64.b64encode(b'x' * 32).decode()}&tree_size=3",
    f"/ct/v1/get-proof-by-hash?hash={base64.b64encode(leaf_hash(b'entry-1')).decode()}&tree_size=99",
    f"/ct/v1/get-proof-by-hash?hash={base64.b64encode(leaf_hash(b'entry-1')).decode()}&tree_size=0",
    "/ct/v1/get-sth-consistency?first=3&second=2",
    "/ct/v1/get-sth-consistency?first=3&second=99",
    "/ct/v1/get-sth-consistency?first=&second=",
    "/ct/v1/get-sth?x=1",
    "/ct/v1/get-entries?" + "a=1&" * 300,
]


@pytest.mark.parametrize("target", HOSTILE)
async def test_hostile_queries_get_json_400s(target: str) -> None:
    status, body = await _get(TlogHttpApp(_log(8)), target)
    assert status == 400
    assert body["success"] is False and body["error_message"]


async def test_unknown_paths_and_methods() -> None:
    app = TlogHttpApp(_log(2))
    assert (await _get(app, "/ct/v1/add-chain"))[0] == 404
    assert (await _get(app, "/ct/v2/get-sth"))[0] == 404
    assert (await _get(app, "/ct/v1/get-sth", method="POST"))[0] == 405


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=st.binary(max_size=80))
def test_property_arbitrary_query_bytes_never_crash(query: bytes) -> None:
    app = TlogHttpApp(_log(4))
    replies: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        replies.append(message)

    async def run() -> None:
        for route in ("get-entries", "get-proof-by-hash", "get-sth-consistency", "get-sth"):
            scope = {
                "type": "http",
                "method": "GET",
                "path": f"/ct/v1/{route}",
                "query_string": query,
            }
            await app(scope, receive, send)

    trio.run(run)
    starts = [m for m in replies if m["type"] == "http.response.start"]
    bodies = [json.loads(m["body"]) for m in replies if m["type"] == "http.response.body"]
    assert len(starts) == len(bodies) == 4
    assert all(s["status"] in (200, 400) for s in starts)
    assert all(isinstance(b, dict) for b in bodies)


async def test_served_by_hypercorn_over_tcp(tmp_path: Path) -> None:
    db = tmp_path / "tlog.sqlite"
    writer = TransparencyLog(SqliteStore(db), clock=StepClock(), signing_key=KEY)
    writer.append_many([f"e{i}".encode() for i in range(5)])
    reader = TransparencyLog(
        SqliteStore(db, read_only=True), clock=StepClock(), public_key=public_key_bytes(KEY)
    )
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: serve_tlog(TlogHttpApp(reader), f"127.0.0.1:{port}", shutdown_trigger=done.wait)
        )
        async with httpx2.AsyncClient() as client:
            # Generous: hypercorn's start-up competes for two loaded CI cores.
            for _ in range(600):
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/ct/v1/get-sth")
                    break
                except httpx2.TransportError:
                    await trio.sleep(0.05)
            else:
                pytest.fail("server did not start")
        done.set()
    sth = SignedTreeHead.from_json_dict(response.json())
    verify_sth(sth, public_key_bytes(KEY))
    assert sth.tree_size == 5
