"""Attack: fill the scheduler's mailbox at the instant its timers fire — a
burst of chunks from many streams, or one node's flood — so the timers are
dropped (a timer is a message, and a full mailbox drops messages).

The scheduler's sweep re-armed itself only when it ran, so one dropped
sweep ended silent-node detection for good: a node that then joined with
256 slots and went silent (its link up, no heartbeat) was never dropped,
took every new placement (most free slots first) and held each request until
its deadline. A dropped ``_Expire`` left a request to its submission's own
give-up, a grace period after its deadline.

Now a message arriving a whole interval after the sweep was due runs the
sweep (which arms its timer again), and each sweep also ends the requests
past their deadline and those whose reader left.
"""

from __future__ import annotations

from _scheduler_cluster import INGRESS, MODEL, Cluster, request

from actors import Actor, ActorSystem, Context, MailboxFull
from actors.remote import RemoteLayer
from actors.scheduler import SchedulerLimits
from protocol.inference import GenerateDone
from protocol.messages import ErrorCode, ErrorReply
from protocol.scheduling import ID_SIZE, JoinScheduler
from simulations.kernel import SimDriver

MAILBOX = 32
INTERVAL = 0.5


class _Squatter(Actor):
    """Joins with every slot a node may announce, then never heartbeats."""

    async def started(self, ctx: Context) -> None:
        scheduler = ctx.system.ref(INGRESS, "scheduler")
        scheduler.tell(JoinScheduler(b"\x51" * ID_SIZE, MODEL, 256), sender=ctx.self)


def _fill_at(cluster: Cluster, when: float) -> None:
    """At virtual time ``when``, before the scheduler's own timers due then
    (scheduled first, so it fires first), fill its mailbox."""
    scheduler = cluster.ingress.ref(INGRESS, "scheduler")

    def fill() -> None:
        for _ in range(MAILBOX + 1):
            try:
                scheduler.tell(object())
            except MailboxFull:
                return

    cluster.kernel.call_at(when, fill)


def test_a_dropped_sweep_still_drops_a_silent_node() -> None:
    cluster = Cluster(
        ("inf-1",), limits=SchedulerLimits(heartbeat_interval=INTERVAL), mailbox=MAILBOX
    )
    for tick in range(1, 4):
        _fill_at(cluster, tick * INTERVAL)  # every sweep due in the first 1.5 s
    requests = [request(4, seed) for seed in range(4)]

    async def main() -> list[list[object]]:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        await cluster.clock.sleep(2.0)  # past the dropped sweeps
        squatter = ActorSystem("squatter", SimDriver(cluster.kernel), random=cluster.rng)
        RemoteLayer(squatter, cluster.network.endpoint("squatter"))
        squatter.spawn(_Squatter())
        await cluster.wait_for(lambda: cluster.serving() == 2)
        streams = [cluster.read(await cluster.submit(r, within=60.0)) for r in requests]
        await cluster.wait_ended(*streams, timeout=90)
        return streams  # type: ignore[return-value]

    started = cluster.now()
    streams = cluster.run(main)
    for stream in streams:
        assert isinstance(stream[-1], GenerateDone), stream[-1]
    # Generous bound: the squatter is dropped after three silent intervals
    # (1.5 s) and the requests run elsewhere, long before their 60 s deadline.
    assert cluster.now() - started < 30
    assert cluster.check().ok


def test_a_dropped_expiry_still_ends_the_request_at_its_deadline() -> None:
    cluster = Cluster(
        ("inf-1",),
        step=100.0,  # the node takes far longer than the deadline
        limits=SchedulerLimits(heartbeat_interval=INTERVAL),
        mailbox=MAILBOX,
    )
    deadline = 3.0
    _fill_at(cluster, deadline)

    async def main() -> tuple[list[object], float]:
        await cluster.wait_for(lambda: cluster.serving() == 1)
        submission = await cluster.dispatcher.submit(request(), tenant="t", deadline=deadline)
        stream = cluster.read(submission)
        await cluster.wait_ended(stream, timeout=30)
        return stream, cluster.now()  # type: ignore[return-value]

    stream, ended_at = cluster.run(main)
    assert stream == [ErrorReply(ErrorCode.DEADLINE_EXCEEDED, False)]
    assert cluster.dispatcher.stats.expired == 1, "the scheduler itself ended it"
    # Within a sweep interval or two of the deadline, not the 5 s grace later.
    assert ended_at < deadline + 4 * INTERVAL
    assert cluster.check().ok
