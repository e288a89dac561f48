"""Attack: the scheduler's side places a sealed request on an inference node
the client did not seal it for, hoping that node serves it.

A request sealed for inf-1 is sent straight to inf-2's worker as
``sched.place_sealed`` (as a scheduler that ignored the envelopes would): the
node holds no envelope for its key, so it answers ``UNAVAILABLE`` (retryable
elsewhere) without generating anything, and nothing it sends back holds the
prompt. The real scheduler never does it: with only a non-candidate node
serving, the request is refused ``NoCapacity`` and that node receives
nothing.
"""

from __future__ import annotations

import pytest
from _scheduler_cluster import CANARY, Cluster, request, seal

from actors import Actor, Context
from actors.scheduler import NoCapacity
from protocol.messages import Envelope, ErrorCode, ErrorReply, encode_envelope
from protocol.scheduling import AttemptFailed, PlaceSealed


class Collector(Actor):
    """Stands where a scheduler would: records whatever comes back."""

    def __init__(self) -> None:
        self.received: list[object] = []

    async def receive(self, ctx: Context, message: object) -> object:
        self.received.append(message)
        return None


def test_a_non_candidate_node_opens_nothing_and_generates_nothing() -> None:
    cluster = Cluster(("inf-1", "inf-2"))
    sealed, _key = seal(cluster, request(6), ["inf-1"])
    collector = Collector()
    hostile = cluster.ingress.spawn(collector)
    outsider = cluster.nodes["inf-2"]

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        worker = cluster.ingress.ref("inf-2", "inference")
        worker.tell(PlaceSealed(bytes(range(16)), sealed), sender=hostile)
        await cluster.wait_for(lambda: bool(collector.received))
        await cluster.clock.sleep(1.0)

    cluster.run(main)
    assert collector.received == [
        AttemptFailed(bytes(range(16)), ErrorReply(ErrorCode.UNAVAILABLE, True))
    ]
    assert outsider.worker_actor.placements_received == 1
    assert outsider.engine.served == 0
    replies = b"".join(encode_envelope(Envelope.wrap(m)) for m in collector.received)
    assert CANARY.encode() not in replies


def test_the_scheduler_sends_nothing_to_a_node_outside_the_candidates() -> None:
    cluster = Cluster(("inf-1", "inf-2"))
    sealed, _key = seal(cluster, request(6), ["inf-1"])
    candidate = cluster.nodes["inf-1"]

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        candidate.system.stop(candidate.membership)  # the only candidate leaves
        await cluster.wait_for(lambda: cluster.serving() == 1)
        with pytest.raises(NoCapacity):
            await cluster.submit(sealed)  # type: ignore[arg-type]
        await cluster.clock.sleep(2.0)

    cluster.run(main)
    assert cluster.nodes["inf-2"].worker_actor.placements_received == 0
