"""Two runs of a client share one trust state file and run at once (two
processes, or two clients in one). The operator shows each another branch of
the log, both extending the tree head stored earlier. Each run loaded the
stored head before the other stored its own, so each alone sees one
consistent log; but the state file is shown both branches. The second to
store must prove its head consistent with what the first stored, and is
refused before it seals anything."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx2
import pytest
from _e2e_ingress_kit import MODEL, E2EIngress, Receive, Scope, Send
from _release_kit import NOW

import mantle
from nodes.store import SqliteStore
from nodes.tlog import TlogHttpApp, TransparencyLog
from protocol.release import ReleaseLogProof
from simulations.clock import ManualClock

pytestmark = pytest.mark.anyio


def _fork(box: E2EIngress) -> TransparencyLog:
    """The genuine log's entries up to the release, then the operator's own."""
    genuine = box.kit.log
    assert genuine is not None
    fork = TransparencyLog(
        SqliteStore.in_memory(),
        clock=ManualClock(int(NOW.timestamp() * 1000)),
        signing_key=box.kit.log_key,
    )
    release_size = ReleaseLogProof.from_json_bytes(box.files.log_proof).sth.tree_size
    fork.append_many(genuine.entries(0, release_size - 1))
    fork.append_many([b"branch b 1", b"branch b 2", b"branch b 3"])
    return fork


class _Branch:
    """The ingress as the second run sees it: the fork's log routes, and its
    node listing held until the first run has stored its head."""

    def __init__(self, box: E2EIngress, log: TransparencyLog, first_done: anyio.Event) -> None:
        self._box = box
        self._log = TlogHttpApp(log)
        self._first_done = first_done
        #: Set once the second run verified release and log and asks for nodes.
        self.waiting = anyio.Event()
        self.chats = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path.startswith("/ct/v1/"):
            await self._log(scope, receive, send)
            return
        if path == "/v1/mantle/nodes":
            self.waiting.set()
            await self._first_done.wait()
        if path == "/v1/mantle/chat":
            self.chats += 1
        await self._box(scope, receive, send)


async def test_the_second_run_to_store_proves_consistency_with_the_first(
    tmp_path: Path,
) -> None:
    box = E2EIngress(tmp_path, nodes=1)
    assert box.kit.log is not None
    fork = _fork(box)  # before the genuine log grows past the release
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        await client.verify(MODEL)  # an earlier run stored the release's head
    box.kit.log.append(b"branch a 1")  # what the first run is shown

    first_done = anyio.Event()
    branch = _Branch(box, fork, first_done)
    second_arguments = box.client_arguments(tmp_path)
    second_arguments["transport"] = httpx2.ASGITransport(app=branch)
    outcome: dict[str, BaseException | None] = {}

    async def first() -> None:
        async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
            await client.verify(MODEL)
        first_done.set()

    async def second() -> None:
        async with mantle.AsyncClient(**second_arguments) as client:
            try:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}]
                )
                outcome["second"] = None
            except mantle.AttestationError as error:
                outcome["second"] = error

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(second)
        await branch.waiting.wait()  # the second run loaded the state and waits
        tasks.start_soon(first)

    refused = outcome["second"]
    assert isinstance(refused, mantle.AttestationError)
    assert refused.check is mantle.ClientCheck.TLOG_CONSISTENCY
    assert branch.chats == 0
