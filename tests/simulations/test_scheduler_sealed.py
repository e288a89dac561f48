"""Sealed requests through the real scheduler and workers in the simulator.

A client seals a request to some nodes' static keys (``protocol.e2e``); the
scheduler places it only on a node whose link key's binding one of the
envelopes names, retries before the first record stay among those nodes, a
closed submission cancels on the node, and the worker answers with sealed
records the client opens, ending with a receipt the node's receipt key signed.
Nodes' documents over a client's nonce come through the scheduler too.
Each scenario ends with the ``every_submission_ends`` checker (I7)."""

from __future__ import annotations

import pytest
from _scheduler_cluster import (
    CANARY,
    MODEL,
    MODEL_SHA384,
    RELEASE_VERSION,
    Cluster,
    expected_text,
    prompt_tokens,
    request,
    seal,
)

from actors.scheduler import NoCapacity, Replayed, SealedRecord
from protocol.attestation import DocumentKind, noise_key_binding, unverified_payload
from protocol.e2e import (
    RequestKey,
    ResponseFinal,
    ResponseOpener,
    SealedRequest,
    receipt_key_binding,
    request_digest,
)
from protocol.inference import FinishReason, GenerateChunk, GenerateDone, GenerateRequest
from protocol.messages import ErrorReply
from simulations.checkers import crash_reports_clean


def opened(
    sealed: SealedRequest, key: RequestKey, req: GenerateRequest, stream: list[object]
) -> tuple[str, ResponseFinal]:
    """What the client reads: every record opened in order, the last final."""
    opener = ResponseOpener(
        key, sealed.request_id, request_sha256=request_digest(sealed.request_id, req)
    )
    text = ""
    final = None
    for item in stream:
        assert isinstance(item, SealedRecord), item
        content = opener.open(item.record)
        if isinstance(content, GenerateChunk):
            text += content.text.reveal_text()
        else:
            final = content
    assert final is not None and stream and stream[-1].final  # type: ignore[attr-defined]
    return text, opener.finish()


def test_a_sealed_request_is_answered_in_records_the_client_opens() -> None:
    cluster = Cluster(("inf-1", "inf-2"))
    req = request(5, seed=11)
    sealed, key = seal(cluster, req, ["inf-1", "inf-2"])

    async def main() -> list[object]:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        stream = cluster.read(await cluster.submit(sealed))  # type: ignore[arg-type]
        await cluster.wait_for(lambda: bool(stream) and _ended(stream))
        return stream  # type: ignore[return-value]

    stream = cluster.run(main)
    text, final = opened(sealed, key, req, stream)
    assert text == expected_text(req)
    assert final.done == GenerateDone(FinishReason.LENGTH, 5, prompt_tokens(req))
    receipt = final.receipt
    served_by = [n for n in cluster.nodes.values() if n.engine.served]
    assert len(served_by) == 1
    node = served_by[0]
    assert receipt.receipt_key == node.custody.receipt_public
    assert receipt.model == MODEL and receipt.model_sha384 == MODEL_SHA384
    assert receipt.release_version == RELEASE_VERSION and receipt.request_id == sealed.request_id
    # Nothing the scheduler relayed is plaintext.
    relayed = b"".join(item.record for item in stream)  # type: ignore[attr-defined]
    assert CANARY.encode() not in relayed and text.encode() not in relayed
    assert cluster.check().ok, cluster.check()
    assert crash_reports_clean(cluster.crashes, [CANARY]).ok


def _ended(stream: list[object]) -> bool:
    last = stream[-1]
    return isinstance(last, ErrorReply) or (isinstance(last, SealedRecord) and last.final)


def test_a_node_outside_the_candidates_never_receives_the_request() -> None:
    # inf-0 sorts first and has the most free slots: the scheduler's
    # favourite for plain requests, and a candidate of none of these.
    cluster = Cluster(("inf-0", "inf-1", "inf-2"), slots=1, step=0.05)
    reqs = [request(4, seed) for seed in range(8)]
    sealed = [seal(cluster, r, ["inf-1", "inf-2"]) for r in reqs]

    async def main() -> list[list[object]]:
        await cluster.wait_for(lambda: cluster.serving() == 3)
        streams = [cluster.read(await cluster.submit(s)) for s, _ in sealed]  # type: ignore[arg-type]
        await cluster.wait_for(lambda: all(s and _ended(s) for s in streams), 60)
        return streams  # type: ignore[return-value]

    streams = cluster.run(main)
    for req, (s, key), stream in zip(reqs, sealed, streams, strict=True):
        assert opened(s, key, req, stream)[0] == expected_text(req)
    outside = cluster.nodes["inf-0"]
    assert outside.worker_actor.placements_received == 0 and outside.engine.served == 0
    assert cluster.nodes["inf-1"].engine.served + cluster.nodes["inf-2"].engine.served == 8
    assert cluster.check().ok, cluster.check()


def test_a_retry_before_the_first_record_stays_among_the_candidates() -> None:
    # inf-1 is slow to start (nothing streams before it is cut off); the
    # request must go to the other candidate, never to inf-0, which is free
    # all along and first by name.
    cluster = Cluster(
        ("inf-0", "inf-1", "inf-2"), step={"inf-0": 0.01, "inf-1": 5.0, "inf-2": 0.01}
    )
    req = request(4, seed=3)
    sealed, key = seal(cluster, req, ["inf-1", "inf-2"])

    async def main() -> list[object]:
        await cluster.wait_for(lambda: cluster.serving() == 3)
        stream = cluster.read(await cluster.submit(sealed))  # type: ignore[arg-type]
        await cluster.wait_for(lambda: cluster.nodes["inf-1"].worker_actor.placements_received)
        cluster.partition("inf-1")
        await cluster.wait_for(lambda: bool(stream) and _ended(stream), 60)
        return stream  # type: ignore[return-value]

    stream = cluster.run(main)
    assert opened(sealed, key, req, stream)[0] == expected_text(req)
    assert cluster.dispatcher.stats.retries == 1
    assert cluster.nodes["inf-2"].engine.served == 1
    assert cluster.nodes["inf-0"].worker_actor.placements_received == 0
    assert cluster.check().ok, cluster.check()


def test_no_candidate_serving_is_no_capacity_and_a_replay_is_refused() -> None:
    cluster = Cluster(("inf-1", "inf-2"))
    req = request(3, seed=5)
    stranger = seal(cluster, req, ["inf-1"])[0]
    cluster.link_keys["inf-1"] = bytes(32)  # inf-1's link now proves another key

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        with pytest.raises(NoCapacity):
            await cluster.submit(stranger)  # type: ignore[arg-type]
        sealed, _key = seal(cluster, req, ["inf-2"])
        stream = cluster.read(await cluster.submit(sealed))  # type: ignore[arg-type]
        with pytest.raises(Replayed):
            await cluster.submit(sealed)  # type: ignore[arg-type]
        await cluster.wait_for(lambda: bool(stream) and _ended(stream))

    cluster.run(main)
    assert cluster.dispatcher.stats.replays_refused == 1
    assert cluster.nodes["inf-1"].worker_actor.placements_received == 0
    assert cluster.check().ok, cluster.check()


def test_closing_a_sealed_submission_cancels_it_on_the_node() -> None:
    cluster = Cluster(("inf-1",), step=0.05)
    req = request(200, seed=2)
    sealed, _key = seal(cluster, req, ["inf-1"])
    node = cluster.nodes["inf-1"]

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        submission = await cluster.submit(sealed)  # type: ignore[arg-type]
        seen: list[object] = []
        async for item in submission:
            seen.append(item)
            if len(seen) == 3:
                break
        await submission.aclose()
        await cluster.wait_for(
            lambda: node.engine.produced < 200 and not node.worker_actor._running
        )
        load = await node.load()
        assert load.free_slots == 1

    cluster.run(main)
    assert node.engine.produced < 20
    assert cluster.dispatcher.stats.cancelled == 1


def test_node_documents_come_over_the_links_with_the_receipt_key_binding() -> None:
    cluster = Cluster(("inf-1", "inf-2"))
    nonce = bytes(range(32))

    async def main() -> list[object]:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        return await cluster.dispatcher.node_documents(MODEL, nonce)  # type: ignore[return-value]

    documents = cluster.run(main)
    assert sorted(d.node for d in documents) == ["inf-1", "inf-2"]  # type: ignore[attr-defined]
    for found in documents:
        node = cluster.nodes[found.node]  # type: ignore[attr-defined]
        assert found.kind is DocumentKind.NITRO  # type: ignore[attr-defined]
        # Read back without a check (the client verifies; this looks at fields).
        payload = unverified_payload(found.document)  # type: ignore[attr-defined]
        assert payload["nonce"] == nonce
        assert payload["public_key"] == noise_key_binding(node.custody.static_public)
        assert node.custody.receipt_public is not None
        assert payload["user_data"] == receipt_key_binding(node.custody.receipt_public)
