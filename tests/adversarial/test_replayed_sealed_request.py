"""Attack: a captured sealed request is sent again, so that a node answers it
a second time under the same request key (the same response key and record
counters, whose two ciphertexts would leak the XOR of the two answers) or
simply runs it again to compare the lengths.

The scheduler admits a request id once (``Replayed``, HTTP 409), remembered
across restarts of the scheduler actor; a worker opens a request id once, so
a scheduler that sent it again (under a new attempt id) is refused
``BAD_REQUEST`` and nothing is generated twice.
"""

from __future__ import annotations

import pytest
from _scheduler_cluster import Cluster, request, seal

from actors import Actor, Context
from actors.scheduler import Replayed, SealedRecord
from protocol.messages import ErrorCode, ErrorReply
from protocol.scheduling import AttemptFailed, AttemptRecord, PlaceSealed


class Collector(Actor):
    def __init__(self) -> None:
        self.received: list[object] = []

    async def receive(self, ctx: Context, message: object) -> object:
        self.received.append(message)
        return None


def test_a_replay_through_the_scheduler_is_refused_even_after_a_restart() -> None:
    cluster = Cluster(("inf-1",), supervised=True)
    sealed, _key = seal(cluster, request(3), ["inf-1"])

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        stream = cluster.read(await cluster.submit(sealed))  # type: ignore[arg-type]
        await cluster.wait_for(
            lambda: bool(stream) and isinstance(stream[-1], SealedRecord) and stream[-1].final
        )
        with pytest.raises(Replayed):
            await cluster.submit(sealed)  # type: ignore[arg-type]
        scheduler = cluster.ingress.whereis("scheduler")
        assert scheduler is not None
        cluster.ingress.kill(scheduler)
        await cluster.wait_for(
            lambda: cluster.ingress.whereis("scheduler") not in (None, scheduler)
        )
        await cluster.wait_for(lambda: cluster.serving() == 1)
        with pytest.raises(Replayed):
            await cluster.submit(sealed)  # type: ignore[arg-type]

    cluster.run(main)
    assert cluster.nodes["inf-1"].engine.served == 1
    assert cluster.dispatcher.stats.replays_refused == 2


def test_a_worker_opens_a_request_id_once() -> None:
    cluster = Cluster(("inf-1",))
    sealed, _key = seal(cluster, request(3), ["inf-1"])
    collector = Collector()
    hostile = cluster.ingress.spawn(collector)
    node = cluster.nodes["inf-1"]

    async def main() -> None:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        worker = cluster.ingress.ref("inf-1", "inference")
        worker.tell(PlaceSealed(b"\x01" * 16, sealed), sender=hostile)
        await cluster.wait_for(
            lambda: any(isinstance(m, AttemptRecord) and m.final for m in collector.received)
        )
        worker.tell(PlaceSealed(b"\x02" * 16, sealed), sender=hostile)
        await cluster.wait_for(
            lambda: any(isinstance(m, AttemptFailed) for m in collector.received)
        )

    cluster.run(main)
    assert node.engine.served == 1
    records = [m for m in collector.received if isinstance(m, AttemptRecord)]
    assert records and all(m.attempt == b"\x01" * 16 for m in records)
    assert collector.received[-1] == AttemptFailed(
        b"\x02" * 16, ErrorReply(ErrorCode.BAD_REQUEST, False)
    )
