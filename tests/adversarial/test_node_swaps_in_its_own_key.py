"""Attack: a node comes back under a candidate's name with a key of its own
(the operator restarts or replaces inf-1 after the client verified it), so
that the request sealed for the verified key is sent to the new key's holder.

The scheduler places a sealed request by the binding of the static key the
node's *link* proved, never by the name: the key is read when the node joins
and checked again at every placement. Once inf-1's link proves another key,
a request sealed for inf-1's old key goes to the other candidate, though
inf-1 is free and first in line, and inf-1 receives nothing.
"""

from __future__ import annotations

from _scheduler_cluster import Cluster, expected_text, request, seal

from actors.scheduler import SealedRecord
from protocol.e2e import ResponseOpener, request_digest
from protocol.inference import GenerateChunk
from protocol.key_custody import new_static_key


def test_a_request_sealed_for_the_old_key_never_reaches_the_new_one() -> None:
    cluster = Cluster(("inf-1", "inf-2"))
    req = request(5, seed=4)
    sealed, key = seal(cluster, req, ["inf-1", "inf-2"])
    swapped = cluster.nodes["inf-1"]

    async def main() -> list[object]:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        # inf-1 stays joined, but its link now proves a key of its own.
        cluster.link_keys["inf-1"] = new_static_key(cluster.rng.token_bytes).public
        stream = cluster.read(await cluster.submit(sealed))  # type: ignore[arg-type]
        await cluster.wait_for(
            lambda: bool(stream) and isinstance(stream[-1], SealedRecord) and stream[-1].final
        )
        return stream  # type: ignore[return-value]

    stream = cluster.run(main)
    assert swapped.worker_actor.placements_received == 0
    assert cluster.nodes["inf-2"].engine.served == 1
    opener = ResponseOpener(
        key, sealed.request_id, request_sha256=request_digest(sealed.request_id, req)
    )
    text = "".join(
        c.text.reveal_text()
        for item in stream
        if isinstance(c := opener.open(item.record), GenerateChunk)  # type: ignore[attr-defined]
    )
    assert text == expected_text(req)
    assert opener.finish().receipt.receipt_key == cluster.nodes["inf-2"].custody.receipt_public
    assert cluster.check().ok
