"""Attack: the operator replays one captured sealed request to two candidate
nodes (the scheduler's memory of request ids lost in an ingress restart, each
node seeing the id for the first time), hoping both answers are sealed under
one response key and the same record counters: two ciphertexts under one
nonce, whose XOR is the XOR of the two answers (and a forgeable Poly1305).

Each serving node draws a fresh response salt per answer; the response key is
``HKDF(request key, salt = request_id || salt, label)``, so the two answers
share no key, hence no (key, nonce) pair.
"""

from __future__ import annotations

from _scheduler_cluster import Cluster, request, seal

from actors import Actor, Context
from protocol.e2e import (
    FIRST_RECORD_HEADER_SIZE,
    RECORD_HEADER_SIZE,
    ResponseOpener,
    request_digest,
    response_key,
)
from protocol.scheduling import AttemptRecord, PlaceSealed


class Collector(Actor):
    def __init__(self) -> None:
        self.received: list[object] = []

    async def receive(self, ctx: Context, message: object) -> object:
        self.received.append(message)
        return None


def test_one_request_answered_by_two_nodes_is_sealed_under_two_keys() -> None:
    cluster = Cluster(("inf-1", "inf-2"))
    generate = request(4)
    sealed, key = seal(cluster, generate, ["inf-1", "inf-2"])
    collector = Collector()
    hostile = cluster.ingress.spawn(collector)

    def answered(attempt: bytes) -> bool:
        return any(
            isinstance(m, AttemptRecord) and m.attempt == attempt and m.final
            for m in collector.received
        )

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        for attempt, node in ((b"\x01" * 16, "inf-1"), (b"\x02" * 16, "inf-2")):
            worker = cluster.ingress.ref(node, "inference")
            worker.tell(PlaceSealed(attempt, sealed), sender=hostile)
            await cluster.wait_for(lambda attempt=attempt: answered(attempt))

    cluster.run(main)
    answers = {
        attempt: [
            m.record
            for m in collector.received
            if isinstance(m, AttemptRecord) and m.attempt == attempt
        ]
        for attempt in (b"\x01" * 16, b"\x02" * 16)
    }
    first, second = answers.values()
    assert len(first) == len(second) >= 2
    salts = [records[0][RECORD_HEADER_SIZE:FIRST_RECORD_HEADER_SIZE] for records in (first, second)]
    assert salts[0] != salts[1]
    assert response_key(key, sealed.request_id, salts[0]) != response_key(
        key, sealed.request_id, salts[1]
    )
    # The same counters carry unrelated ciphertexts (no keystream in common).
    for mine, theirs in zip(first, second, strict=True):
        start = FIRST_RECORD_HEADER_SIZE if mine is first[0] else RECORD_HEADER_SIZE
        assert mine[:8] == theirs[:8]
        assert mine[start:] != theirs[start:]
    # Both answers still open for the client, each under its own key.
    digest = request_digest(sealed.request_id, generate)
    for records in (first, second):
        opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
        for record in records:
            opener.open(record)
        opener.finish()
