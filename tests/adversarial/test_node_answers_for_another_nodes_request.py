"""Attack: an inference node answers for a request the scheduler placed on
another node, to write into (or end) a stranger's completion.

The scheduler routes replies by attempt id. Even a node that learned another
node's attempt id (the worst case; ids are 16 random bytes) gets nothing in:
a reply is accepted only from the node the attempt was placed on, which is
the authenticated link's peer (the remote layer believes no sender on another
node). The victim's completion arrives whole and unchanged, ended by its own
node.
"""

from __future__ import annotations

from _scheduler_cluster import Cluster, expected_text, prompt_tokens, request, text_of

from protocol.customer_data import CustomerData
from protocol.inference import FinishReason, GenerateChunk, GenerateDone
from protocol.messages import ErrorCode, ErrorReply
from protocol.scheduling import AttemptChunk, AttemptDone, AttemptFailed

INJECTED = "INJECTED-by-another-node"


def test_replies_from_another_node_never_reach_the_request() -> None:
    cluster = Cluster(("inf-1", "inf-2"), step=0.05)
    victim, hostile = cluster.nodes["inf-1"], cluster.nodes["inf-2"]
    req = request(12)

    async def main() -> list[object]:
        await cluster.wait_for(lambda: cluster.serving() == 2)
        stream = cluster.read(await cluster.submit(req))
        await cluster.wait_for(lambda: len(stream) >= 2)
        (attempt,) = victim.worker_actor._running  # the id, as if it had leaked
        scheduler = hostile.system.ref("ingress", "scheduler")
        forged = [
            AttemptChunk(attempt, len(stream), GenerateChunk(CustomerData(INJECTED), 1)),
            AttemptDone(attempt, len(stream) + 1, GenerateDone(FinishReason.STOP, 1)),
            AttemptFailed(attempt, ErrorReply(ErrorCode.INTERNAL, False)),
        ]
        for message in forged:
            scheduler.tell(message, sender=hostile.membership)
        await cluster.wait_ended(stream)
        return stream  # type: ignore[return-value]

    stream = cluster.run(main)
    assert stream[-1] == GenerateDone(FinishReason.LENGTH, 12, prompt_tokens(req))
    assert text_of(stream) == expected_text(req)  # type: ignore[arg-type]
    assert INJECTED not in text_of(stream)  # type: ignore[arg-type]
    assert cluster.dispatcher.stats.replies_ignored >= 3
    assert cluster.check().ok
