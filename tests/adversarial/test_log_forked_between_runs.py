"""Between two runs the operator serves another branch of the log: one that
still includes the release, but not the tree head the client stored on its
own disk the first time. The second run refuses it (and a log wound back to
before the stored head), and sends nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from _e2e_ingress_kit import MODEL, E2EIngress
from _release_kit import NOW

import mantle
from nodes.store import SqliteStore
from nodes.tlog import TlogHttpApp, TransparencyLog
from protocol.release import ReleaseLogProof
from simulations.clock import ManualClock

pytestmark = pytest.mark.anyio


def _fork(box: E2EIngress, extra: bytes) -> TransparencyLog:
    """A log under the same key holding the same entries as ``box``'s up to
    the release, then entries of ``extra`` instead of what the genuine log holds."""
    genuine = box.kit.log
    assert genuine is not None
    fork = TransparencyLog(
        SqliteStore.in_memory(),
        clock=ManualClock(int(NOW.timestamp() * 1000)),
        signing_key=box.kit.log_key,
    )
    release_size = ReleaseLogProof.from_json_bytes(box.files.log_proof).sth.tree_size
    fork.append_many(genuine.entries(0, release_size - 1))
    # Larger than the stored head, so only a consistency proof could tie them.
    fork.append_many([extra, extra + b" 2", extra + b" 3"])
    return fork


async def test_a_fork_between_runs_is_refused(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=1)
    assert box.kit.log is not None
    box.kit.log.append(b"a later entry of the genuine log")
    arguments = box.client_arguments(tmp_path)
    async with mantle.AsyncClient(**arguments) as client:
        await client.verify(MODEL)  # run 1 stores the genuine head
    # Control: the genuine log, grown further, is accepted in a second run.
    box.kit.log.append(b"another genuine entry")
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        await client.verify(MODEL)
    box.tlog = TlogHttpApp(_fork(box, b"what the operator shows this client instead"))
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.AttestationError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
    assert refused.value.check is mantle.ClientCheck.TLOG_CONSISTENCY
    assert "/v1/mantle/nodes" not in box.requests[-3:] and not box.relayed


async def test_a_log_wound_back_before_the_stored_head_is_refused(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=1)
    genuine = box.kit.log
    assert genuine is not None
    earlier = genuine.sth().to_json_dict()
    genuine.append(b"a later entry")
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        await client.verify(MODEL)
    box.sth_override = earlier  # validly signed, but smaller than the stored head
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.AttestationError) as refused:
            await client.verify(MODEL)
    assert refused.value.check is mantle.ClientCheck.TLOG_CONSISTENCY
